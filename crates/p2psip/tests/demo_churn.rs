//! `p2psip demo --kill-fraction 0.2` on 56 real TLS peers: a fifth of the ordinary peers is
//! hard-stopped at once (in-process: no leave, sockets dropped) under a call workload; the
//! survivors must recover — from some window on, ≥ 99 % of the calls between live peers
//! ring — and the JSON report must say when.
//!
//! A debug build on two shared cores takes 1–3 s per call set-up even without churn, so
//! this test counts a call as good within 8 s; the 2 s aim is measured by the release demo
//! (`p2psip demo --kill-fraction 0.2`, see the issue-9 report).
#![allow(clippy::unwrap_used)]

mod support;

use support::ok_json;

#[test]
fn a_fifth_of_the_peers_killed_under_calls_and_the_rest_recover() {
    let v = ok_json(&[
        "demo",
        "--peers",
        "56",
        "--calls",
        "0",
        "--no-baseline",
        "--concurrency",
        "4",
        "--kill-fraction",
        "0.2",
        "--churn-before-s",
        "4",
        "--churn-after-s",
        "30",
        "--churn-window-ms",
        "2000",
        "--churn-ring-within-ms",
        "8000",
        "--json",
    ]);
    let c = &v["churn"];
    eprintln!("{c}");
    // 56 peers: 16 CSPs/CSPGs, 1617 (the paper's dropper) and 39 ordinary; a fifth of those.
    assert_eq!(c["killed"], 8, "{c}");
    assert_eq!(c["alive"], 48, "{c}");
    assert!(
        c["calls_after"].as_u64().unwrap() >= 30,
        "too few calls: {c}"
    );
    let rec = c["recovery_s"]
        .as_f64()
        .unwrap_or_else(|| panic!("calls to live callees never got back to ≥ 99 %: {c}"));
    assert!(rec < 24.0, "recovered only {rec} s after the kill: {c}");
    let rate = c["rate_after_recovery"].as_f64().unwrap();
    assert!(rate >= 0.99, "{rate}: {c}");
    assert!(c["calls_after_recovery"].as_u64().unwrap() >= 10, "{c}");
}
