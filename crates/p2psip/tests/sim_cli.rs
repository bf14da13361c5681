//! `p2psip sim` and `p2psip demo` as a user runs them: results, JSON, and clear errors.
#![allow(clippy::unwrap_used)]

mod support;

use support::run;

#[test]
fn paper_scenario_json() {
    let out = run(&["sim", "--scenario", "paper", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["chord"]["delivered"], false);
    assert_eq!(v["secure"]["delivered"], true);
    assert_eq!(v["secure"]["chosen_route"], serde_json::json!([1600, 1618]));
}

#[test]
fn lookup_json_has_the_documented_fields() {
    let out = run(&["sim", "--peers", "300", "--lookups", "500", "--json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for k in [
        "peers",
        "lookups",
        "success_rate",
        "hops_mean",
        "hops_p99",
        "latency_ms_p50",
        "latency_ms_p99",
        "events",
        "wall_s",
        "state_bytes_per_peer",
        "threads",
    ] {
        assert!(v.get(k).is_some(), "missing {k}");
    }
    assert_eq!(v["success_rate"], 1.0);
    assert_eq!(v["threads"], 1);
}

/// A ring split over more threads than it has peers still runs: some arcs are empty.
#[test]
fn more_threads_than_peers_still_find_every_owner() {
    let out = run(&[
        "sim",
        "--peers",
        "5",
        "--lookups",
        "200",
        "--threads",
        "8",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["success_rate"], 1.0);
    assert_eq!(v["lookups"], 200);
    assert_eq!(v["threads"], 8);
}

#[test]
fn bad_parameters_are_clear_errors_not_panics() {
    for (args, needle) in [
        (
            vec!["sim", "--peers", "100", "--calls", "10", "--zipf=nan"],
            "Zipf",
        ),
        (
            vec![
                "sim",
                "--peers",
                "100",
                "--calls",
                "10",
                "--malicious",
                "1.0",
            ],
            "honest",
        ),
        (
            vec!["sim", "--peers", "10", "--calls", "10"],
            "at least 30 peers",
        ),
        (
            vec!["sim", "--peers", "100", "--lookups", "10", "--loss", "2"],
            "--loss",
        ),
        (
            vec!["sim", "--peers", "100", "--lookups", "10", "--bits", "0"],
            "bits",
        ),
        (
            vec![
                "sim",
                "--peers",
                "100",
                "--lookups",
                "10",
                "--lookup-rate",
                "0",
            ],
            "rate",
        ),
        (
            "sim --peers 100 --lookups 10 --threads 2 --churn-median-session 60"
                .split(' ')
                .collect(),
            "no churn",
        ),
        (
            "sim --peers 100 --lookups 10 --threads 2 --grow"
                .split(' ')
                .collect(),
            "converged start",
        ),
    ] {
        let out = run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn simulated_demo_passes_the_paper_scenario() {
    let out = run(&["demo", "--simulated", "--calls", "100", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["paper_scenario_ok"], true);
    assert_eq!(v["peers"], 512);
    assert_eq!(v["calls_ringing"], v["calls_attempted"]);
}
