//! The fixed, seeded experiments behind `p2psip eval`: their sizes per mode and the raw
//! results. Every number comes from the simulator (`sim`), the trust arithmetic (`trust`)
//! or the E&A locality code (`enroll`); this module only chooses parameters and collects.

use crate::LabError;
use crate::locality::{self, LocalityLatency};
use overlay::IdSpace;
use overlay::secure::Routing;
use serde::Serialize;
use sim::{
    Behaviour, CallReport, CallRun, LookupReport, LookupRun, PaperReport, TrustSample, WorldConfig,
};
use std::time::Duration;

/// How big the experiments are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Mode {
    /// Seconds in a debug build: for the test suite only.
    Tiny,
    /// About a minute in release.
    Quick,
    /// The sizes of the issues' claims (N up to 1.3·10^5, 10^4-peer attack runs).
    Full,
}

/// Lookup hops vs N.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct LookupPlan {
    pub(crate) sizes: Vec<usize>,
    pub(crate) lookups: u64,
}

/// A simulated call workload: peers, measured calls and how fast they start. The attack,
/// cache and trust experiments each run one.
#[derive(Clone, Copy, Debug, Serialize)]
pub(crate) struct CallLoad {
    pub(crate) peers: usize,
    pub(crate) calls: u64,
    /// Calls started per simulated second.
    pub(crate) call_rate: f64,
}

impl CallLoad {
    const fn new(peers: usize, calls: u64, call_rate: f64) -> Self {
        CallLoad {
            peers,
            calls,
            call_rate,
        }
    }

    /// The simulator run of this workload over `routing`, seeded with `seed`.
    fn run(&self, routing: Routing, seed: u64) -> CallRun {
        let mut run = CallRun::new(self.peers, self.calls, routing);
        run.seed = seed;
        run.call_rate = self.call_rate;
        run
    }
}

/// Call success vs malicious fraction.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct AttackPlan {
    #[serde(flatten)]
    pub(crate) load: CallLoad,
    pub(crate) warmup_calls: u64,
    pub(crate) fractions: Vec<f64>,
    pub(crate) behaviours: Vec<Behaviour>,
    /// Malicious fraction of the attacked SRD series.
    pub(crate) srd_malicious: f64,
}

/// Contact cache vs Zipf exponent.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct CachePlan {
    #[serde(flatten)]
    pub(crate) load: CallLoad,
    pub(crate) zipf: Vec<f64>,
}

/// Location-aware vs SHA-1 IDs.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct LocalityPlan {
    /// Peers of the ring-distance measurement.
    pub(crate) peers: usize,
    /// Geographic neighbours compared.
    pub(crate) neighbours: Vec<usize>,
    /// Peers of the lookup-latency runs.
    pub(crate) latency_peers: usize,
    pub(crate) lookups: usize,
    /// Share of lookups whose key is a peer of the caller's city.
    pub(crate) local_fractions: Vec<f64>,
}

/// Trust convergence over time.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct TrustPlan {
    #[serde(flatten)]
    pub(crate) load: CallLoad,
    pub(crate) malicious: f64,
    pub(crate) behaviours: Vec<Behaviour>,
}

/// Every parameter of a report.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Plan {
    pub(crate) mode: Mode,
    pub(crate) seed: u64,
    pub(crate) lookups: LookupPlan,
    pub(crate) attack: AttackPlan,
    pub(crate) cache: CachePlan,
    pub(crate) locality: LocalityPlan,
    pub(crate) trust: TrustPlan,
}

const ALL_BEHAVIOURS: [Behaviour; 4] = [
    Behaviour::Drop,
    Behaviour::Misroute,
    Behaviour::Modify,
    Behaviour::Replay,
];

impl Plan {
    pub(crate) fn new(mode: Mode, seed: u64) -> Self {
        let pow2 = |lo: u32, hi: u32, step: usize| -> Vec<usize> {
            (lo..=hi).step_by(step).map(|e| 1usize << e).collect()
        };
        let fractions = vec![0.0, 0.1, 0.2, 0.3, 0.4];
        match mode {
            Mode::Tiny => Plan {
                mode,
                seed,
                lookups: LookupPlan {
                    sizes: pow2(5, 9, 2),
                    lookups: 200,
                },
                attack: AttackPlan {
                    load: CallLoad::new(120, 40, 100.0),
                    warmup_calls: 40,
                    fractions: vec![0.0, 0.2],
                    behaviours: ALL_BEHAVIOURS.to_vec(),
                    srd_malicious: 0.2,
                },
                cache: CachePlan {
                    load: CallLoad::new(120, 300, 100.0),
                    zipf: vec![0.0, 1.0],
                },
                locality: LocalityPlan {
                    peers: 100,
                    neighbours: vec![1, 5],
                    latency_peers: 100,
                    lookups: 60,
                    local_fractions: vec![0.0, 1.0],
                },
                trust: TrustPlan {
                    load: CallLoad::new(120, 150, 20.0),
                    malicious: 0.2,
                    behaviours: vec![Behaviour::Drop],
                },
            },
            Mode::Quick => Plan {
                mode,
                seed,
                lookups: LookupPlan {
                    sizes: pow2(5, 15, 2),
                    lookups: 3000,
                },
                attack: AttackPlan {
                    load: CallLoad::new(600, 300, 200.0),
                    warmup_calls: 600,
                    fractions,
                    behaviours: ALL_BEHAVIOURS.to_vec(),
                    srd_malicious: 0.2,
                },
                cache: CachePlan {
                    load: CallLoad::new(150, 3000, 200.0),
                    zipf: vec![0.0, 0.5, 1.0, 1.5],
                },
                locality: LocalityPlan {
                    peers: 1000,
                    neighbours: vec![1, 2, 5, 10, 20],
                    latency_peers: 600,
                    lookups: 600,
                    local_fractions: vec![0.0, 0.25, 0.5, 0.75, 0.9, 1.0],
                },
                trust: TrustPlan {
                    load: CallLoad::new(600, 1500, 25.0),
                    malicious: 0.2,
                    behaviours: vec![Behaviour::Drop, Behaviour::Mixed],
                },
            },
            Mode::Full => Plan {
                mode,
                seed,
                lookups: LookupPlan {
                    sizes: pow2(6, 17, 1),
                    lookups: 20_000,
                },
                attack: AttackPlan {
                    load: CallLoad::new(10_000, 1000, 200.0),
                    warmup_calls: 5000,
                    fractions,
                    behaviours: ALL_BEHAVIOURS.to_vec(),
                    srd_malicious: 0.2,
                },
                cache: CachePlan {
                    load: CallLoad::new(1000, 20_000, 200.0),
                    zipf: vec![0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0],
                },
                locality: LocalityPlan {
                    peers: 3000,
                    neighbours: vec![1, 2, 3, 5, 10, 20, 50],
                    latency_peers: 3000,
                    lookups: 5000,
                    local_fractions: vec![0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0],
                },
                trust: TrustPlan {
                    load: CallLoad::new(10_000, 8000, 50.0),
                    malicious: 0.2,
                    behaviours: vec![
                        Behaviour::Drop,
                        Behaviour::Misroute,
                        Behaviour::Modify,
                        Behaviour::Replay,
                        Behaviour::Mixed,
                    ],
                },
            },
        }
    }

    /// Simulator runs in all, for the progress bar.
    pub(crate) fn steps(&self) -> u64 {
        let a = &self.attack;
        let attack = a.fractions.len() * a.behaviours.len() * 4;
        (self.lookups.sizes.len()
            + attack
            + self.cache.zipf.len() * 2
            + self.locality.neighbours.len()
            + self.locality.local_fractions.len()
            + self.trust.behaviours.len()
            + 1) as u64
    }
}

/// Reports one finished step (its label) to the progress bar.
pub(crate) type Step<'a> = &'a mut dyn FnMut(String);

/// Figure 1's raw data: one lookup run per N.
pub(crate) fn lookups(plan: &Plan, step: Step<'_>) -> Result<Vec<LookupReport>, LabError> {
    let space = IdSpace::new(128).map_err(LabError::setup("the 128-bit ID space"))?;
    let mut out = Vec::new();
    for &n in &plan.lookups.sizes {
        let mut run = LookupRun::new(n, plan.lookups.lookups, WorldConfig::new(space, plan.seed));
        run.warmup = Duration::from_secs(1);
        out.push(sim::run_lookups(&run, &mut |_| {})?);
        step(format!("lookups N={n}"));
    }
    Ok(out)
}

/// Trust state of a call run's measurement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Warmth {
    /// The SOS knows nothing when measuring starts.
    Cold,
    /// `warmup_calls` calls fed it evidence first.
    Warm,
}

/// What one call run of figure 2 was run under: the routing, the SOS's warmth and the
/// share of malicious peers. Figure 3's series are some of these runs.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub(crate) struct Conditions {
    pub(crate) routing: &'static str,
    pub(crate) trust: Warmth,
    pub(crate) malicious: f64,
}

impl Conditions {
    /// How figure 3 names the series of a drop run under these conditions.
    fn drop_label(&self) -> String {
        if self.malicious == 0.0 {
            format!("{}, no attack", self.routing)
        } else {
            let warmth = match self.trust {
                Warmth::Cold => "cold",
                Warmth::Warm => "warmed",
            };
            format!(
                "{}, {:.0}% drop, {warmth}",
                self.routing,
                100.0 * self.malicious
            )
        }
    }
}

/// One call run of figure 2.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct AttackPoint {
    pub(crate) behaviour: Behaviour,
    #[serde(flatten)]
    pub(crate) run: Conditions,
    pub(crate) report: CallReport,
}

/// A setup-delay sample for figure 3.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct SrdSeries {
    pub(crate) label: String,
    #[serde(flatten)]
    pub(crate) run: Conditions,
    /// Session request delays of the calls that rang, milliseconds, sorted.
    pub(crate) setup_ms: Vec<f64>,
}

/// Figures 2 and 3.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct AttackResults {
    pub(crate) points: Vec<AttackPoint>,
    pub(crate) srd: Vec<SrdSeries>,
}

fn routing_name(r: Routing) -> &'static str {
    match r {
        Routing::Secure => "secure",
        Routing::Chord => "chord",
    }
}

/// Behaviour as a lowercase word.
pub(crate) fn behaviour_name(b: Behaviour) -> String {
    format!("{b:?}").to_lowercase()
}

/// Figure 2's sweep; figure 3's series come from the same runs (drop behaviour).
pub(crate) fn attack(plan: &Plan, step: Step<'_>) -> Result<AttackResults, LabError> {
    let a = &plan.attack;
    let mut points = Vec::new();
    let mut srd = Vec::new();
    for &b in &a.behaviours {
        for &f in &a.fractions {
            for routing in [Routing::Secure, Routing::Chord] {
                for warmth in [Warmth::Cold, Warmth::Warm] {
                    let mut run = a.load.run(routing, plan.seed);
                    run.malicious = f;
                    run.behaviour = b;
                    run.warmup_calls = match warmth {
                        Warmth::Cold => 0,
                        Warmth::Warm => a.warmup_calls,
                    };
                    let (report, series) = sim::run_calls_traced(&run, &mut |_, _| {})?;
                    let conditions = Conditions {
                        routing: routing_name(routing),
                        trust: warmth,
                        malicious: f,
                    };
                    let keep = b == Behaviour::Drop
                        && ((f == 0.0 && warmth == Warmth::Cold)
                            || (f == a.srd_malicious && routing == Routing::Secure));
                    if keep {
                        let mut setup_ms: Vec<f64> = series
                            .calls
                            .iter()
                            .filter(|c| c.succeeded)
                            .map(|c| c.setup_ms)
                            .collect();
                        setup_ms.sort_by(f64::total_cmp);
                        srd.push(SrdSeries {
                            label: conditions.drop_label(),
                            run: conditions,
                            setup_ms,
                        });
                    }
                    step(format!(
                        "calls {} f={f} {} {:?}",
                        behaviour_name(b),
                        routing_name(routing),
                        warmth
                    ));
                    points.push(AttackPoint {
                        behaviour: b,
                        run: conditions,
                        report,
                    });
                }
            }
        }
    }
    Ok(AttackResults { points, srd })
}

/// Per-layer numbers of one cache run.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct LayerCache {
    /// Layer of the caller, 1..=3.
    pub(crate) layer: u8,
    /// Measured calls placed from this layer.
    pub(crate) calls: usize,
    /// Share of them served from the contact cache.
    pub(crate) hit_rate: f64,
    /// Mean hops of the calls that rang.
    pub(crate) hops_mean: f64,
    /// Mean session request delay of the calls that rang, ms.
    pub(crate) setup_ms_mean: f64,
}

/// One cache run of figure 4.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct CachePoint {
    pub(crate) zipf: f64,
    pub(crate) cache_enabled: bool,
    pub(crate) layers: Vec<LayerCache>,
    pub(crate) report: CallReport,
}

/// Figure 4: every Zipf exponent with the cache on and off, no attack.
pub(crate) fn cache(plan: &Plan, step: Step<'_>) -> Result<Vec<CachePoint>, LabError> {
    let c = &plan.cache;
    let mut out = Vec::new();
    for &s in &c.zipf {
        for enabled in [true, false] {
            let mut run = c.load.run(Routing::Secure, plan.seed);
            run.zipf = Some(s);
            run.secure.cache_enabled = enabled;
            let (report, series) = sim::run_calls_traced(&run, &mut |_, _| {})?;
            let layers = (1..=3u8)
                .map(|layer| {
                    let mine: Vec<_> = series
                        .calls
                        .iter()
                        .filter(|c| c.caller_layer == layer)
                        .collect();
                    let rang: Vec<_> = mine.iter().filter(|c| c.succeeded).collect();
                    let mean = |f: &dyn Fn(&sim::CallOutcome) -> f64| {
                        if rang.is_empty() {
                            f64::NAN
                        } else {
                            rang.iter().map(|c| f(c)).sum::<f64>() / rang.len() as f64
                        }
                    };
                    LayerCache {
                        layer,
                        calls: mine.len(),
                        hit_rate: if mine.is_empty() {
                            f64::NAN
                        } else {
                            mine.iter().filter(|c| c.cached).count() as f64 / mine.len() as f64
                        },
                        hops_mean: mean(&|c| c.hops as f64),
                        setup_ms_mean: mean(&|c| c.setup_ms),
                    }
                })
                .collect();
            step(format!(
                "cache zipf={s} {}",
                if enabled { "on" } else { "off" }
            ));
            out.push(CachePoint {
                zipf: s,
                cache_enabled: enabled,
                layers,
                report,
            });
        }
    }
    Ok(out)
}

/// Figure 5's raw data.
#[derive(Debug, Serialize)]
pub(crate) struct LocalityResults {
    /// Ring distance to the k geographically nearest peers, one report per k.
    pub(crate) ring: Vec<enroll::locality::LocalityReport>,
    /// Lookup latency per scheme, one run per local fraction.
    pub(crate) latency: Vec<LocalityLatency>,
}

/// Figure 5.
pub(crate) fn locality(plan: &Plan, step: Step<'_>) -> Result<LocalityResults, LabError> {
    let l = &plan.locality;
    let mut ring = Vec::new();
    for &k in &l.neighbours {
        ring.push(enroll::locality::report(
            &enroll::locality::LocalityConfig {
                seed: plan.seed,
                peers: l.peers,
                neighbours: k,
                ..enroll::locality::LocalityConfig::default()
            },
        ));
        step(format!("locality k={k}"));
    }
    let mut latency = Vec::new();
    for &local in &l.local_fractions {
        latency.push(locality::run(l.latency_peers, l.lookups, local, plan.seed)?);
        step(format!("locality latency local={local}"));
    }
    Ok(LocalityResults { ring, latency })
}

/// One trust-convergence run of figure 6.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct TrustRun {
    pub(crate) behaviour: Behaviour,
    /// The SOS's view every 2 s of simulated time.
    pub(crate) samples: Vec<TrustSample>,
    /// Call success per time bin: (bin end, seconds; success rate; calls).
    pub(crate) success: Vec<(f64, f64, usize)>,
    pub(crate) report: CallReport,
}

/// Figure 6: a cold secure overlay under attack, every call measured, the SOS watched.
pub(crate) fn trust(plan: &Plan, step: Step<'_>) -> Result<Vec<TrustRun>, LabError> {
    let t = &plan.trust;
    let mut out = Vec::new();
    for &b in &t.behaviours {
        let mut run = t.load.run(Routing::Secure, plan.seed);
        run.malicious = t.malicious;
        run.behaviour = b;
        let (report, series) = sim::run_calls_traced(&run, &mut |_, _| {})?;
        let span = series.calls.iter().map(|c| c.t_s).fold(0.0f64, f64::max);
        let bin = (span / 20.0).max(1.0);
        let mut bins: Vec<(usize, usize)> = vec![(0, 0); (span / bin).ceil() as usize + 1];
        for c in &series.calls {
            let i = ((c.t_s / bin) as usize).min(bins.len() - 1);
            bins[i].0 += usize::from(c.succeeded);
            bins[i].1 += 1;
        }
        // A bin with under a quarter of the fullest bin's calls (the tail) says little.
        let full = bins.iter().map(|b| b.1).max().unwrap_or(0);
        let success = bins
            .iter()
            .enumerate()
            .filter(|(_, (_, n))| *n > 0 && *n * 4 >= full)
            .map(|(i, (ok, n))| ((i + 1) as f64 * bin, *ok as f64 / *n as f64, *n))
            .collect();
        step(format!("trust {}", behaviour_name(b)));
        out.push(TrustRun {
            behaviour: b,
            samples: series.trust,
            success,
            report,
        });
    }
    Ok(out)
}

/// The numbers the paper prints for its scenario (paper text, Section 3.2).
#[derive(Clone, Debug, Serialize)]
pub(crate) struct PaperPrinted {
    /// Plain Chord's path, "80 → 1331 → 1593 → 1609 → 1617 → 1618".
    pub(crate) chord_path: Vec<u128>,
    /// CSPG 1 → CSPG 1030 → CSP 1536.
    pub(crate) secure_via: Vec<u128>,
    /// (route, b, d, u, E) as printed: ωp1 and ωp2.
    pub(crate) routes: Vec<(Vec<u128>, [f64; 3], f64)>,
}

/// Figure 7's raw data: the scenario run in the simulator, the SOS arithmetic on the
/// paper's opinions, and what the paper prints.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct PaperResults {
    pub(crate) simulated: PaperReport,
    pub(crate) ranked: Vec<trust::RankedRoute<u128>>,
    pub(crate) opinions: Vec<(u128, f64, f64, f64)>,
    pub(crate) base_rate: f64,
    pub(crate) printed: PaperPrinted,
}

/// Figure 7.
pub(crate) fn paper(plan: &Plan, step: Step<'_>) -> Result<PaperResults, LabError> {
    let simulated = sim::run_paper(plan.seed)?;
    step("paper scenario".into());
    Ok(PaperResults {
        simulated,
        ranked: trust::paper::rank(),
        opinions: trust::paper::OPINIONS.to_vec(),
        base_rate: trust::paper::BASE_RATE,
        printed: PaperPrinted {
            chord_path: vec![80, 1331, 1593, 1609, 1617, 1618],
            secure_via: vec![1, 1030, 1536],
            routes: vec![
                (vec![1600, 1618], [0.738, 0.042, 0.22], 0.764),
                (vec![1593, 1609, 1618], [0.662, 0.037, 0.301], 0.738),
            ],
        },
    })
}
