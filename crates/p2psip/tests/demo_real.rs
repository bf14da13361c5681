//! `p2psip demo` on real TLS peers, small: 32 peers (the paper's CSPs, CSPGs and named peers
//! plus random ones) in one process, the paper's scenario and 50 random calls; the JSON
//! report must show every peer enrolled, converged rings, ringing calls and the secure
//! scenario (the INVITE seen only by CSPGs, the CSP and the callee).
#![allow(clippy::unwrap_used)]

mod support;

use support::ok_json;

#[test]
fn small_real_demo_reports_ringing_calls_as_json() {
    let v = ok_json(&[
        "demo",
        "--peers",
        "32",
        "--calls",
        "50",
        "--concurrency",
        "2",
        "--json",
    ]);
    assert_eq!(v["mode"], "real");
    assert_eq!(v["peers"], 32);
    assert_eq!(v["csp"], 13);
    assert_eq!(v["cspg"], 3);
    assert_eq!(v["calls_attempted"], 50);
    let ringing = v["calls_ringing"].as_u64().unwrap();
    // A debug build on two shared cores: TLS set-up alone takes 100–300 ms here, so a call
    // can exceed the 3 s call timeout twice. The ≥ 99.9 % aim is measured in release by the
    // demo's own report; this checks that the real overlay carries calls at all.
    assert!(ringing >= 45, "only {ringing} of 50 calls rang: {v}");
    let p50 = v["srd_ms_p50"].as_f64().unwrap();
    let p99 = v["srd_ms_p99"].as_f64().unwrap();
    assert!(p50 > 0.0 && p50 <= p99, "{v}");
    assert!(v["converge_s"].as_f64().unwrap() > 0.0);
    assert!(v["rss_bytes_per_peer"].as_u64().unwrap() > 0);
    assert!(v["sos_rankings"].as_u64().unwrap() >= 1);
    assert!(v["sos_reports"].as_u64().unwrap() >= 1);
    assert!(v["paper_scenario_ok"].is_boolean());
    // The secure scenario: 80 → 1618 rang, and only gateways, CSPs and the callee saw it.
    let paper = &v["paper"];
    assert_eq!(paper["secure_delivered"], true, "{paper}");
    let infra = [
        1u64, 600, 1030, 128, 256, 384, 480, 640, 768, 896, 1000, 1100, 1300, 1536, 1800, 1950,
        1618,
    ];
    for r in paper["invite_receivers"].as_array().unwrap() {
        let r = r.as_u64().unwrap();
        assert!(infra.contains(&r), "peer {r} saw the INVITE: {paper}");
    }
    assert!(!paper["ping_carriers"].as_array().unwrap().is_empty());
}

#[test]
fn check_fit_says_which_sizes_run_here_without_running_them() {
    // 2 048 peers are every Node-ID of the paper's m = 11 space: refused whatever the host.
    let v = ok_json(&["demo", "--peers", "2048", "--check-fit", "--json"]);
    assert_eq!(v["runs"], false, "{v}");
    assert!(v["reason"].as_str().unwrap().contains("m = 11"), "{v}");
    // 32 peers fit any open-file limit of a thousand or more, each with its share of links.
    let v = ok_json(&["demo", "--peers", "32", "--check-fit", "--json"]);
    assert_eq!(v["peers"], 32);
    if v["nofile"].as_u64().unwrap() >= 1024 {
        assert_eq!(v["runs"], true, "{v}");
        assert!(v["peer_links"].as_u64().unwrap() >= 12, "{v}");
    }
}
