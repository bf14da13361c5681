//! Call experiments: the paper's scenario and secure routing against plain Chord.
#![allow(clippy::unwrap_used)]

use overlay::secure::Routing;
use sim::{Behaviour, CallRun, LatencyModel, run_calls, run_calls_traced, run_paper};
use std::time::Duration;

#[test]
fn paper_scenario_plain_chord_fails_secure_delivers_and_sos_picks_1600() {
    let r = run_paper(1).unwrap();
    assert!(!r.chord.delivered, "{r:?}");
    assert_eq!(
        r.chord.path.last(),
        Some(&1617),
        "plain Chord must die at 1617: {:?}",
        r.chord.path
    );
    assert!(r.secure.delivered, "{r:?}");
    assert!(
        r.secure.routes.contains(&vec![1593, 1609, 1618]),
        "{:?}",
        r.secure.routes
    );
    assert!(
        r.secure.routes.contains(&vec![1600, 1618]),
        "{:?}",
        r.secure.routes
    );
    assert!(r.secure.routes.iter().all(|route| !route.contains(&1617)));
    assert_eq!(r.secure.chosen_route, vec![1600, 1618]);
    let o = r.secure.opinion.unwrap();
    for (got, want) in o.iter().zip([0.738, 0.041, 0.221, 0.25]) {
        assert!((got - want).abs() < 1e-9, "{o:?}");
    }
    assert!((r.secure.expectation.unwrap() - 0.79325).abs() < 1e-9);
}

/// The attack these tests share, run: 400 calls among 1500 peers, a fifth of them acting
/// out `behaviour`, over 5–50 ms links; `vary` sets what a test varies.
fn attacked(
    routing: Routing,
    behaviour: Behaviour,
    seed: u64,
    vary: impl FnOnce(&mut CallRun),
) -> sim::CallReport {
    let mut run = CallRun::new(1500, 400, routing);
    run.malicious = 0.2;
    run.behaviour = behaviour;
    run.seed = seed;
    run.latency = LatencyModel::Uniform {
        min: Duration::from_millis(5),
        max: Duration::from_millis(50),
    };
    vary(&mut run);
    run_calls(&run, &mut |_, _| {}).unwrap()
}

fn run(routing: Routing, behaviour: Behaviour, warmup: u64) -> sim::CallReport {
    attacked(routing, behaviour, 3, |run| run.warmup_calls = warmup)
}

#[test]
fn secure_routing_beats_plain_chord_under_every_behaviour() {
    for b in [
        Behaviour::Drop,
        Behaviour::Misroute,
        Behaviour::Modify,
        Behaviour::Replay,
        Behaviour::Mixed,
    ] {
        let chord = run(Routing::Chord, b, 0);
        let secure = run(Routing::Secure, b, 0);
        assert!(secure.success_rate >= 0.9, "{b:?}: {secure:?}");
        // A misrouted INVITE is re-routed by the next honest hop, so plain Chord survives
        // misrouting; every other behaviour breaks it.
        if b == Behaviour::Misroute {
            assert!(
                secure.success_rate >= chord.success_rate,
                "{b:?}: {secure:?} {chord:?}"
            );
            assert!(secure.reports > 0);
        } else {
            assert!(
                secure.success_rate > chord.success_rate,
                "{b:?}: secure {} chord {}",
                secure.success_rate,
                chord.success_rate
            );
        }
    }
}

#[test]
fn evidence_closes_the_loop() {
    let cold = run(Routing::Secure, Behaviour::Drop, 0);
    let warm = run(Routing::Secure, Behaviour::Drop, 1500);
    let caught = warm.distrusted_malicious;
    assert!(caught > cold.distrusted_malicious, "{cold:?} {warm:?}");
    assert!(caught > warm.distrusted_honest, "{warm:?}");
    assert!(warm.success_rate >= cold.success_rate, "{cold:?} {warm:?}");
}

#[test]
fn no_adversary_every_call_rings_and_cache_serves_repeats() {
    let mut r = CallRun::new(300, 3000, Routing::Secure);
    r.zipf = Some(1.0);
    r.latency = LatencyModel::Constant(Duration::from_millis(10));
    let rep = run_calls(&r, &mut |_, _| {}).unwrap();
    assert_eq!(rep.success_rate, 1.0, "{rep:?}");
    assert!(rep.cache_hit_rate > 0.05, "{rep:?}");
    assert_eq!(rep.distrusted_honest, 0, "{rep:?}");
}

#[test]
fn traced_run_matches_the_summary_and_trust_separates_over_time() {
    let mut r = CallRun::new(600, 600, Routing::Secure);
    r.malicious = 0.2;
    r.warmup_calls = 600;
    r.call_rate = 50.0;
    r.seed = 5;
    let plain = run_calls(&r, &mut |_, _| {}).unwrap();
    let (rep, series) = run_calls_traced(&r, &mut |_, _| {}).unwrap();
    // Tracing observes; it does not change the run.
    assert_eq!(rep.succeeded, plain.succeeded);
    assert_eq!(rep.setup_ms_p50, plain.setup_ms_p50);
    assert_eq!(series.calls.len() as u64, rep.calls);
    let ok = series.calls.iter().filter(|c| c.succeeded).count() as u64;
    assert_eq!(ok, rep.succeeded);
    assert!(
        series
            .calls
            .iter()
            .all(|c| (1..=3).contains(&c.caller_layer))
    );
    // 1200 calls at 50/s: about 24 s, sampled every 2 s.
    assert!(series.trust.len() >= 10, "{}", series.trust.len());
    let first = &series.trust[0];
    let last = series.trust.last().unwrap();
    assert!(last.t_s > first.t_s);
    assert!(
        last.malicious_expectation < last.honest_expectation - 0.05,
        "{last:?}"
    );
    assert!(
        last.malicious_distrusted > last.honest_distrusted,
        "{last:?}"
    );
    assert!(
        last.malicious_distrusted > first.malicious_distrusted,
        "{first:?} {last:?}"
    );
}

fn strategic(behaviour: Behaviour, weigh: bool) -> sim::CallReport {
    strategic_checked(behaviour, weigh, true)
}

fn strategic_checked(behaviour: Behaviour, weigh: bool, check: bool) -> sim::CallReport {
    attacked(Routing::Secure, behaviour, 5, |run| {
        run.check_reports = check;
        run.warmup_calls = 1200;
        run.weigh_reporters = weigh;
    })
}

#[test]
fn strategic_attackers_are_survived_without_distrusting_honest_peers() {
    for b in [
        Behaviour::OnOff,
        Behaviour::Collude,
        Behaviour::BadMouth,
        Behaviour::Slander,
    ] {
        let r = strategic(b, true);
        assert!(r.success_rate >= 0.98, "{b:?}: {r:?}");
        assert!(r.false_positive_rate <= 0.005, "{b:?}: {r:?}");
        assert!(r.malicious_peers > 0 && r.honest_peers > 0, "{r:?}");
        assert_eq!(
            r.false_positive_rate,
            r.distrusted_honest as f64 / r.honest_peers as f64
        );
    }
}

#[test]
fn weighing_reporters_keeps_bad_mouthing_from_distrusting_honest_peers() {
    let plain = strategic(Behaviour::BadMouth, false);
    let weighed = strategic(Behaviour::BadMouth, true);
    assert!(
        plain.distrusted_honest > weighed.distrusted_honest,
        "unweighted {plain:?} weighed {weighed:?}"
    );
}

#[test]
fn liars_with_a_good_forwarding_record_lose_their_voice_not_honest_peers_theirs() {
    // Slanderers forward well (half of them) and earn the SOS's belief that they forward;
    // weighed by that belief alone, their lies get honest peers distrusted.
    let by_forwarding = strategic_checked(Behaviour::Slander, true, false);
    let checked = strategic_checked(Behaviour::Slander, true, true);
    assert!(
        by_forwarding.false_positive_rate > 0.02,
        "the attack must bite without the check: {by_forwarding:?}"
    );
    assert!(checked.false_positive_rate <= 0.005, "{checked:?}");
    assert!(checked.success_rate >= 0.98, "{checked:?}");
}

fn eclipse(csp_successors: usize) -> sim::CallReport {
    attacked(Routing::Secure, Behaviour::Eclipse, 5, |run| {
        run.csp_successors = csp_successors;
    })
}

#[test]
fn an_eclipse_of_the_arcs_after_the_csps_does_not_cut_their_callees_off() {
    // The eight peers right after every CSP drop: a CSP that knows only those eight
    // successors cannot reach the callees right behind them, cold or warm.
    let short = eclipse(8);
    assert!(short.malicious_peers > 200, "{short:?}");
    assert!(
        short.success_rate < 0.97,
        "the eclipse must bite: {short:?}"
    );
    // Knowing its arc further, the CSP's new round sends a copy straight to the callee.
    let long = eclipse(32);
    assert!(long.success_rate >= 0.99, "{long:?}");
    assert_eq!(long.false_positive_rate, 0.0, "{long:?}");
}
