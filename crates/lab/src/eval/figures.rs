//! From results to figures: which series go on which panel, and captions that name each
//! experiment's parameters and seed.

use super::experiments::{Conditions, Warmth, behaviour_name};
use super::plot::{Axis, Figure, Legend, PANEL, Panel, Scale, Series, Style, Table};
use super::results::Results;
use sim::Behaviour;

/// All eight figures.
pub(crate) fn all(r: &Results) -> Vec<Figure> {
    vec![
        hops(r),
        attack(r),
        srd(r),
        cache(r),
        locality(r),
        trust(r),
        paper(r),
        super::scaling::figure(r.scaling.as_ref()),
    ]
}

/// What a series of figure 5(a) plots of one locality measurement.
type RingOf = fn(&enroll::locality::LocalityReport) -> f64;

/// What a series of figure 5(b) plots of one scheme's lookup latencies.
type LatencyOf = fn(&crate::locality::SchemeLatency) -> f64;

/// What a series of figure 6 plots of one trust sample.
type TrustOf = fn(&sim::TrustSample) -> f64;

fn pct(v: f64) -> String {
    format!("{:.1}%", 100.0 * v)
}

fn fig(
    id: &'static str,
    title: &str,
    caption: String,
    panels: Vec<Panel>,
    columns: usize,
) -> Figure {
    Figure {
        id,
        title: title.into(),
        caption,
        panels,
        columns,
        panel_size: PANEL,
        table: None,
    }
}

fn hops(r: &Results) -> Figure {
    let p = &r.plan.lookups;
    // One number of every lookup run, against N.
    let per_n = |name, color, style, f: fn(&sim::LookupReport) -> f64| {
        let pts = r.lookups.iter().map(|l| (l.peers as f64, f(l))).collect();
        Series::new(name, color, style, pts)
    };
    let (lo, hi) = (
        *p.sizes.first().unwrap_or(&2) as f64,
        *p.sizes.last().unwrap_or(&4) as f64,
    );
    let theory: Vec<(f64, f64)> = (0..=40)
        .map(|i| {
            let n = lo * (hi / lo).powf(i as f64 / 40.0);
            (n, 0.5 * n.log2())
        })
        .collect();
    // Both panels: N on a log axis, the y axis up to the run's largest p99.
    let panel = |title, y_label, p99: fn(&sim::LookupReport) -> f64| {
        let x = Axis::log(lo / 1.4, hi * 1.4);
        let y = Axis::lin_to(r.lookups.iter().map(p99));
        let mut p = Panel::new(title, "peers N (log scale)", y_label, x, y);
        p.legend = Legend::UpperLeft;
        p
    };
    let mut a = panel("(a) overlay hops per lookup", "hops", |l| l.hops_p99);
    a.series = vec![
        per_n("mean hops (simulated)", 0, Style::LineMarkers, |l| {
            l.hops_mean
        }),
        per_n("99th percentile", 1, Style::Markers, |l| l.hops_p99),
        Series::new("½·log2 N (Chord's expected mean)", 7, Style::Dashed, theory),
    ];
    let mut b = panel("(b) lookup latency", "latency, ms (virtual)", |l| {
        l.latency_ms_p99
    });
    b.series = vec![
        per_n("median", 0, Style::LineMarkers, |l| l.latency_ms_p50),
        per_n("99th percentile", 1, Style::LineMarkers, |l| {
            l.latency_ms_p99
        }),
    ];
    let worst = r
        .lookups
        .iter()
        .map(|l| l.success_rate)
        .fold(1.0f64, f64::min);
    let excess: Vec<String> = r
        .lookups
        .iter()
        .map(|l| format!("N={} {:.2} vs {:.2}", l.peers, l.hops_mean, l.hops_expected))
        .collect();
    fig(
        "fig1-hops",
        "1. Chord lookup hops vs N",
        format!(
            "Converged Chord ring (m = 128, successor list r = 8, finger tables as Chord's stable \
             state), {} lookups per N from random peers to random keys at 1 lookup/peer/s, \
             geographic latency model, seed {}. Lowest lookup success {}. Mean hops vs ½·log2 N: {}.",
            p.lookups,
            r.plan.seed,
            pct(worst),
            excess.join("; ")
        ),
        vec![a, b],
        2,
    )
}

fn attack(r: &Results) -> Figure {
    let a = &r.plan.attack;
    let mut panels = Vec::new();
    for (i, &b) in a.behaviours.iter().enumerate() {
        let mut p = Panel::new(
            format!(
                "({}) malicious peers {}",
                (b'a' + i as u8) as char,
                behaviour_name(b)
            ),
            "malicious fraction f",
            "calls that rang",
            Axis::lin(-0.01, a.fractions.last().copied().unwrap_or(0.4) + 0.02),
            Axis::lin(0.0, 1.04),
        );
        p.y.scale = Scale::Percent;
        p.legend = Legend::LowerLeft;
        for (routing, warmth, name, color, style) in [
            (
                "secure",
                Warmth::Warm,
                "secure, warmed trust",
                0,
                Style::LineMarkers,
            ),
            (
                "secure",
                Warmth::Cold,
                "secure, cold trust",
                5,
                Style::LineMarkers,
            ),
            (
                "chord",
                Warmth::Warm,
                "plain Chord, warmed",
                1,
                Style::Dashed,
            ),
            (
                "chord",
                Warmth::Cold,
                "plain Chord, cold",
                4,
                Style::LineMarkers,
            ),
        ] {
            let pts = r
                .attack
                .points
                .iter()
                .filter(|q| q.behaviour == b && q.run.routing == routing && q.run.trust == warmth)
                .map(|q| (q.run.malicious, q.report.success_rate))
                .collect();
            p.series.push(Series::new(name, color, style, pts));
        }
        panels.push(p);
    }
    let at = |b: Behaviour, routing: &'static str, trust: Warmth, malicious: f64| {
        let run = Conditions {
            routing,
            trust,
            malicious,
        };
        r.attack
            .points
            .iter()
            .find(|q| q.behaviour == b && q.run == run)
            .map(|q| q.report.success_rate)
    };
    let mut key = Vec::new();
    for f in [0.2, 0.3] {
        if let (Some(s), Some(c)) = (
            at(Behaviour::Drop, "secure", Warmth::Warm, f),
            at(Behaviour::Drop, "chord", Warmth::Cold, f),
        ) {
            key.push(format!(
                "drop at f = {f}: secure warmed {}, plain Chord {}",
                pct(s),
                pct(c)
            ));
        }
    }
    let msgs = |routing: &'static str| {
        let run = Conditions {
            routing,
            trust: Warmth::Cold,
            malicious: 0.0,
        };
        r.attack
            .points
            .iter()
            .find(|q| q.run == run)
            .map(|q| q.report.messages_per_call)
            .unwrap_or(f64::NAN)
    };
    fig(
        "fig2-attack",
        "2. Call success vs malicious fraction: secure routing vs plain Chord",
        format!(
            "{} peers (m = 128, three layers, one CSP per 40 peers, one CSPG per layer), {} \
             measured calls between random honest peers at {} calls/s; warmed = {} calls first \
             fed the SOS evidence, cold = none; PingRequest fan-out 4; closed loop (SOS \
             distrust list every 2 s); geographic latency; seed {}. {}. Messages per call with \
             no attack: secure {:.1}, plain Chord {:.1}. A replaying peer holds what it \
             forwards for 60 s, so within a call it acts as a drop (the late copy is rejected); \
             a misrouted INVITE is re-routed by the next honest hop.",
            a.load.peers,
            a.load.calls,
            a.load.call_rate,
            a.warmup_calls,
            r.plan.seed,
            key.join("; "),
            msgs("secure"),
            msgs("chord")
        ),
        panels,
        2,
    )
}

fn cdf(sorted: &[f64]) -> Vec<(f64, f64)> {
    let n = sorted.len();
    if n == 0 {
        return Vec::new();
    }
    // At most ~400 points: every k-th sample plus the last.
    let k = n.div_ceil(400).max(1);
    let mut out: Vec<(f64, f64)> = (0..n)
        .step_by(k)
        .map(|i| (sorted[i], (i + 1) as f64 / n as f64))
        .collect();
    out.push((sorted[n - 1], 1.0));
    out
}

fn srd(r: &Results) -> Figure {
    let mut series: Vec<Series> = r
        .attack
        .srd
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let style = if s.run.routing == "chord" {
                Style::Dashed
            } else {
                Style::Line
            };
            Series::new(
                format!("simulated: {}", s.label),
                i,
                style,
                cdf(&s.setup_ms),
            )
        })
        .collect();
    let mut note = None;
    match &r.demo {
        Some(d) => {
            let pts = if d.srd_ms.is_empty() {
                d.percentiles.clone()
            } else {
                cdf(&d.srd_ms)
            };
            let style = if d.srd_ms.is_empty() {
                Style::Markers
            } else {
                Style::Line
            };
            series.push(Series::new(format!("demo ({})", d.mode), 7, style, pts));
        }
        None => {
            note = Some(
                "No demo report given (--demo-report FILE): real loopback SRD not shown".into(),
            );
        }
    }
    let xs = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .filter(|v| *v > 0.0);
    let (lo, hi) = xs.fold((f64::INFINITY, 0.0f64), |(a, b), v| (a.min(v), b.max(v)));
    let (lo, hi) = if lo.is_finite() {
        (lo, hi)
    } else {
        (1.0, 1000.0)
    };
    let mut p = Panel::new(
        "session request delay, CDF",
        "INVITE to 180 Ringing at the caller, ms (log scale)",
        "share of calls that rang",
        Axis::log(lo / 1.3, hi * 1.3),
        // Headroom above 100% holds the legend and the note, clear of every curve.
        Axis::lin(0.0, 1.45),
    );
    p.y.scale = Scale::Percent;
    p.y.label_max = Some(1.0);
    p.legend = Legend::UpperRight;
    p.series = series;
    p.note = note;
    let a = &r.plan.attack;
    let meds: Vec<String> = r
        .attack
        .srd
        .iter()
        .map(|s| {
            let med = s
                .setup_ms
                .get(s.setup_ms.len() / 2)
                .copied()
                .unwrap_or(f64::NAN);
            format!("{} median {:.0} ms", s.label, med)
        })
        .collect();
    let demo = match &r.demo {
        Some(d) => format!(
            " Demo series from {} ({}, {} samples).",
            d.file,
            d.mode,
            d.srd_ms.len().max(d.percentiles.len())
        ),
        None => " No demo report was given, so only simulated delays are shown.".into(),
    };
    let mut f = fig(
        "fig3-srd",
        "3. Session request delay (SRD)",
        format!(
            "From figure 2's drop runs: {} peers, {} measured calls at {} calls/s, \
             {:.0}% malicious for the attacked series (warmed = {} calls of evidence first), \
             geographic latency (virtual time, includes the 150 ms PingRequest collection \
             window and a 10 ms SOS round trip on the secure path), seed {}. {}.{}",
            a.load.peers,
            a.load.calls,
            a.load.call_rate,
            100.0 * a.srd_malicious,
            a.warmup_calls,
            r.plan.seed,
            meds.join("; "),
            demo
        ),
        vec![p],
        1,
    );
    f.panel_size = (1000, 540);
    f
}

fn cache(r: &Results) -> Figure {
    let c = &r.plan.cache;
    let layer_of = |on: bool, layer: u8| {
        r.cache
            .iter()
            .filter(move |p| p.cache_enabled == on)
            .filter_map(move |p| {
                p.layers
                    .iter()
                    .find(|l| l.layer == layer)
                    .map(|l| (p.zipf, l.clone()))
            })
    };
    let zmax = c.zipf.last().copied().unwrap_or(1.5);
    let x = Axis::lin(-0.03, zmax + 0.05);
    let mut hit = Panel::new(
        "(a) contact-cache hit rate",
        "Zipf exponent s of callee popularity",
        "calls served from the cache",
        x.clone(),
        Axis::lin(0.0, 1.02),
    );
    hit.y.scale = Scale::Percent;
    hit.legend = Legend::UpperLeft;
    let saving = |f: &dyn Fn(&super::experiments::LayerCache) -> f64, layer: u8| {
        let off: Vec<_> = layer_of(false, layer).collect();
        layer_of(true, layer)
            .filter_map(|(z, on)| {
                let base = off.iter().find(|(zo, _)| *zo == z)?;
                let b = f(&base.1);
                (b > 0.0).then(|| (z, 1.0 - f(&on) / b))
            })
            .collect::<Vec<_>>()
    };
    let mut hops = Panel::new(
        "(b) hop savings vs cache off",
        "Zipf exponent s of callee popularity",
        "fewer hops per call",
        x.clone(),
        Axis::lin(-0.05, 1.0),
    );
    hops.y.scale = Scale::Percent;
    hops.legend = Legend::UpperLeft;
    let mut delay = Panel::new(
        "(c) setup-delay savings vs cache off",
        "Zipf exponent s of callee popularity",
        "lower mean SRD",
        x,
        Axis::lin(-0.05, 1.0),
    );
    delay.y.scale = Scale::Percent;
    delay.legend = Legend::UpperLeft;
    for layer in 1..=3u8 {
        let name = if layer == 3 {
            "layer 3 (no cache by design)".to_string()
        } else {
            format!("layer {layer}")
        };
        let color = usize::from(layer - 1);
        hit.series.push(Series::new(
            name.clone(),
            color,
            Style::LineMarkers,
            layer_of(true, layer)
                .map(|(z, l)| (z, l.hit_rate))
                .collect(),
        ));
        hops.series.push(Series::new(
            name.clone(),
            color,
            Style::LineMarkers,
            saving(&|l| l.hops_mean, layer),
        ));
        delay.series.push(Series::new(
            name,
            color,
            Style::LineMarkers,
            saving(&|l| l.setup_ms_mean, layer),
        ));
    }
    for p in [&mut hit, &mut hops, &mut delay] {
        let (lo, hi) = p
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|q| q.1))
            .filter(|v| v.is_finite())
            .fold((0.0f64, 0.0f64), |(a, b), v| (a.min(v), b.max(v)));
        p.y = Axis::lin(lo.min(0.0) - 0.02, (hi * 1.25).max(0.1));
    }
    let at1: Vec<String> = [1u8, 2]
        .iter()
        .filter_map(|&layer| {
            let (_, l) = layer_of(true, layer).find(|(z, _)| *z == 1.0)?;
            let s = saving(&|l| l.hops_mean, layer)
                .into_iter()
                .find(|(z, _)| *z == 1.0)?
                .1;
            Some(format!(
                "layer {layer}: hit rate {}, {} fewer hops",
                pct(l.hit_rate),
                pct(s)
            ))
        })
        .collect();
    fig(
        "fig4-cache",
        "4. Contact cache vs callee popularity (Zipf), per layer of the caller",
        format!(
            "Secure overlay, {} peers, no attack, {} measured calls at {} calls/s from \
             uniformly drawn callers (about {:.0} calls per peer: the cache is per caller) to \
             callees drawn Zipf(s) over honest peers (s = 0 is uniform); cache 256 entries, \
             TTL 600 s, in layers 1 and 2 only; each s run with the cache on and off, same \
             seed {}. Savings compare mean hops and mean SRD of the calls that rang. At s = 1: {}.",
            c.load.peers,
            c.load.calls,
            c.load.call_rate,
            c.load.calls as f64 / c.load.peers as f64,
            r.plan.seed,
            at1.join("; ")
        ),
        vec![hit, hops, delay],
        3,
    )
}

fn locality(r: &Results) -> Figure {
    let l = &r.plan.locality;
    let k_max = l.neighbours.last().copied().unwrap_or(20) as f64;
    let ring = &r.locality.ring;
    let ys = ring
        .iter()
        .flat_map(|x| {
            [
                x.location.mean,
                x.location.median,
                x.sha1.mean,
                x.sha1.median,
            ]
        })
        .filter(|v| *v > 0.0);
    let (lo, hi) = ys.fold((1.0f64, 0.0f64), |(a, b), v| (a.min(v), b.max(v)));
    let mut a = Panel::new(
        "(a) ring distance to geographic neighbours",
        "k nearest peers (great-circle), log scale",
        "ring distance / layer arc (log)",
        Axis::log(0.8, k_max * 1.25),
        // Three empty decades above the data hold the legend.
        Axis::log(lo / 2.0, hi.max(0.34) * 3000.0),
    );
    a.legend = Legend::UpperRight;
    a.y.label_max = Some(1.0);
    let pts = |f: &dyn Fn(&enroll::locality::LocalityReport) -> f64| {
        ring.iter()
            .map(|x| (x.config.neighbours as f64, f(x)))
            .collect::<Vec<_>>()
    };
    let distances: [(&str, usize, RingOf); 4] = [
        ("location-aware, mean", 0, |x| x.location.mean),
        ("location-aware, median", 5, |x| x.location.median),
        ("SHA-1, mean", 1, |x| x.sha1.mean),
        ("SHA-1, median", 4, |x| x.sha1.median),
    ];
    a.series = distances
        .into_iter()
        .map(|(name, color, f)| Series::new(name, color, Style::LineMarkers, pts(&f)))
        .collect();
    let uniform = vec![(0.8, 1.0 / 3.0), (k_max * 1.25, 1.0 / 3.0)];
    let uniform = Series::new("uniform random IDs (1/3)", 7, Style::Dashed, uniform);
    a.series.push(uniform);
    let lat = &r.locality.latency;
    let scheme = |name: &str, f: &dyn Fn(&crate::locality::SchemeLatency) -> f64| {
        lat.iter()
            .filter_map(|x| {
                let s = x.schemes.iter().find(|s| s.scheme == name)?;
                Some((x.local_fraction, f(s)))
            })
            .collect::<Vec<_>>()
    };
    let mut b = Panel::new(
        "(b) lookup latency",
        "share of lookups for a peer in the caller's city",
        "lookup latency, ms (virtual)",
        Axis::lin(-0.02, 1.02),
        Axis::lin_to(
            lat.iter()
                .flat_map(|x| x.schemes.iter().map(|s| s.latency_ms_p99)),
        ),
    );
    b.legend = Legend::LowerLeft;
    // Each scheme in its colour: the median as a line with markers, the p99 dashed.
    let stats: [(&str, Style, LatencyOf); 2] = [
        ("median", Style::LineMarkers, |s| s.latency_ms_p50),
        ("p99", Style::Dashed, |s| s.latency_ms_p99),
    ];
    b.series = [("location-aware", "location", 0), ("SHA-1", "sha1", 1)]
        .into_iter()
        .flat_map(|(label, name, color)| {
            stats.map(|(stat, style, f)| {
                Series::new(format!("{label}, {stat}"), color, style, scheme(name, &f))
            })
        })
        .collect();
    let k5 = ring.iter().find(|x| x.config.neighbours == 5);
    let k5 = k5.map_or(String::new(), |x| {
        format!(
            " At k = 5 the mean normalised ring distance is {:.2e} (location-aware) vs {:.3} (SHA-1).",
            x.location.mean, x.sha1.mean
        )
    });
    let full_local = lat
        .iter()
        .find(|x| x.local_fraction == 1.0)
        .map_or(String::new(), |x| {
            let m: Vec<String> = x
                .schemes
                .iter()
                .map(|s| format!("{} median {:.1} ms", s.scheme, s.latency_ms_p50))
                .collect();
            format!(" All-local lookups: {}.", m.join(", "))
        });
    fig(
        "fig5-locality",
        "5. Location-aware (Hilbert) vs SHA-1 Node-IDs",
        format!(
            "(a) E&A locality measurement: {} peers round-robin over the E&A city table with \
             ±0.5° jitter, IDs in layer 2's arc of a 128-bit space, k = {:?}. (b) Converged \
             Chord ring of {} peers on the same cities with the geographic latency model, {} \
             lookups per point, the same (caller, key) pairs for both schemes. Seed {}.{}{}",
            l.peers, l.neighbours, l.latency_peers, l.lookups, r.plan.seed, k5, full_local
        ),
        vec![a, b],
        2,
    )
}

fn trust(r: &Results) -> Figure {
    let t = &r.plan.trust;
    let mut panels = Vec::new();
    let mut key = Vec::new();
    for (i, run) in r.trust.iter().enumerate() {
        let tmax = run
            .samples
            .iter()
            .map(|s| s.t_s)
            .chain(run.success.iter().map(|s| s.0))
            .fold(1.0f64, f64::max);
        let mut p = Panel::new(
            format!(
                "({}) malicious peers {}",
                (b'a' + i as u8) as char,
                behaviour_name(run.behaviour)
            ),
            "simulated time, s",
            "expectation E / share",
            Axis::lin(0.0, tmax * 1.02),
            Axis::lin(0.0, 1.55),
        );
        // The legend sits above the data (nothing exceeds 1).
        p.legend = Legend::UpperRight;
        p.y.label_max = Some(1.0);
        let ser = |f: &dyn Fn(&sim::TrustSample) -> f64| {
            run.samples
                .iter()
                .map(|s| (s.t_s, f(s)))
                .collect::<Vec<_>>()
        };
        // Expectation as lines, the distrusted shares dashed; honest peers in colour 0,
        // malicious ones in colour 1.
        let line = |name, color, f: TrustOf| Series::new(name, color, Style::Line, ser(&f));
        let dashed = |name, color, f: TrustOf| Series::new(name, color, Style::Dashed, ser(&f));
        let success = run.success.iter().map(|s| (s.0, s.1)).collect();
        p.series = vec![
            line("E, honest peers", 0, |s| s.honest_expectation),
            line("E, malicious peers", 1, |s| s.malicious_expectation),
            dashed("distrusted, malicious", 1, |s| s.malicious_distrusted),
            dashed("distrusted, honest", 0, |s| s.honest_distrusted),
            Series::new("call success (per bin)", 2, Style::LineMarkers, success),
        ];
        if let (Some(first), Some(last)) = (run.success.first(), run.success.last()) {
            key.push(format!(
                "{}: success {} in the first bin, {} in the last; E honest {:.2} vs malicious {:.2} at the end",
                behaviour_name(run.behaviour),
                pct(first.1),
                pct(last.1),
                run.samples.last().map_or(f64::NAN, |s| s.honest_expectation),
                run.samples.last().map_or(f64::NAN, |s| s.malicious_expectation)
            ));
        }
        panels.push(p);
    }
    fig(
        "fig6-trust",
        "6. Trust convergence: the SOS's expectation of honest vs malicious peers",
        format!(
            "Secure overlay of {} peers, {:.0}% malicious, starting cold (every peer vacuous, \
             E = a = 0.25); {} calls at {} calls/s, all measured. The SOS takes the peers' \
             evidence reports, derives opinions (prior weight 2, no ageing), publishes the \
             distrusted peers (d > b) every 2 s, and is sampled then. Seed {}. {}.",
            t.load.peers,
            100.0 * t.malicious,
            t.load.calls,
            t.load.call_rate,
            r.plan.seed,
            key.join("; ")
        ),
        panels,
        2,
    )
}

fn path(p: &[u128]) -> String {
    p.iter()
        .map(u128::to_string)
        .collect::<Vec<_>>()
        .join(" → ")
}

fn triple(o: &[f64]) -> String {
    o.iter()
        .map(|v| format!("{v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The rows of the paper table: (quantity, paper prints, this build, agrees).
pub(crate) fn paper_rows(r: &Results) -> Vec<[String; 4]> {
    let p = &r.paper;
    let sim = &p.simulated;
    let yes = |b: bool| if b { "yes" } else { "NO" }.to_string();
    let mut rows = Vec::new();
    let chord_stops = sim.chord.path.last().copied();
    rows.push([
        "plain Chord, 80 → 1618".into(),
        format!("{} (1617 malicious: fails)", path(&p.printed.chord_path)),
        format!(
            "{}: {}",
            path(&sim.chord.path),
            if sim.chord.delivered {
                "delivered"
            } else {
                "failed"
            }
        ),
        if !sim.chord.delivered && chord_stops == Some(1617) {
            "yes: dies at 1617".into()
        } else {
            "NO".into()
        },
    ]);
    rows.push([
        "secure system, 80 → 1618".into(),
        format!("via CSPG {} → CSPG {} → CSP {}", 1, 1030, 1536),
        format!(
            "{}; {} PingRequest routes reached 1618",
            if sim.secure.delivered {
                "delivered"
            } else {
                "failed"
            },
            sim.secure.routes.len()
        ),
        yes(sim.secure.delivered),
    ]);
    for (peer, b, d, u) in &p.opinions {
        let printed = match peer {
            1600 => "(0.82, 0.08, 0.08)".to_string(),
            _ => format!("({})", triple(&[*b, *d, *u])),
        };
        let note = if *peer == 1600 {
            " (u = 1 − b − d)"
        } else {
            ""
        };
        rows.push([
            format!("opinion of peer {peer}"),
            printed,
            format!("({}){note}, a = {}", triple(&[*b, *d, *u]), p.base_rate),
            if *peer == 1600 {
                "input fixed".into()
            } else {
                "input".into()
            },
        ]);
    }
    for (route, bdu, e) in &p.printed.routes {
        let ours = p.ranked.iter().find(|x| &x.route == route);
        let (text, ok) = match ours {
            Some(x) => {
                let o = x.opinion;
                let close = (o.belief() - bdu[0]).abs() < 0.0015
                    && (o.disbelief() - bdu[1]).abs() < 0.0015
                    && (o.uncertainty() - bdu[2]).abs() < 0.0015;
                (
                    format!(
                        "({:.4}, {:.4}, {:.4}), E = {:.5}",
                        o.belief(),
                        o.disbelief(),
                        o.uncertainty(),
                        x.expectation
                    ),
                    if close && (x.expectation - e).abs() < 0.0015 {
                        "yes".to_string()
                    } else if close {
                        "b, d, u yes; E: paper typo".to_string()
                    } else {
                        "NO".to_string()
                    },
                )
            }
            None => ("not ranked".into(), "NO".into()),
        };
        rows.push([
            format!("route {}", path(route)),
            format!("({}), v = {e}", triple(bdu)),
            text,
            ok,
        ]);
    }
    let chosen = &sim.secure.chosen_route;
    rows.push([
        "SOS's choice (simulated callee)".into(),
        "1600 → 1618".into(),
        format!(
            "{}{}",
            path(chosen),
            sim.secure
                .expectation
                .map_or(String::new(), |e| format!(", E = {e:.5}"))
        ),
        yes(chosen == &vec![1600, 1618]),
    ]);
    rows
}

fn paper(r: &Results) -> Figure {
    let rows = paper_rows(r);
    let ok = rows.iter().filter(|x| x[3].starts_with("yes")).count();
    let table = Table {
        header: vec![
            "quantity".into(),
            "the paper prints".into(),
            "this build".into(),
            "agrees".into(),
        ],
        rows: rows.into_iter().map(|x| x.to_vec()).collect(),
        widths: vec![270, 400, 470, 190],
    };
    Figure {
        id: "fig7-paper",
        title: "7. The paper's malicious-peer scenario, side by side".into(),
        caption: format!(
            "Simulated with `sim::run_paper` (m = 11, 512 peers: 496 + 13 CSPs + 3 CSPGs in \
             three layers, caller 80, callee 1618, peer 1617 drops, the paper's four opinions \
             set in the SOS, base rate a = {}, classic discounting), seed {}. {ok} rows agree \
             outright. The paper prints 1600's opinion as (0.82, 0.08, 0.08), which does not \
             sum to 1; only u = 0.10 reproduces its route result. Its v = 0.764 for route \
             1600 → 1618 cannot come from a = 0.25 (b + a·u = 0.79325): a typo; the ranking \
             is the same.",
            r.paper.base_rate, r.plan.seed
        ),
        panels: Vec::new(),
        columns: 1,
        panel_size: PANEL,
        table: Some(table),
    }
}
