#![allow(clippy::unwrap_used)] // test helpers: a failure is a test failure
//! The Grafana dashboard in deploy/grafana queries only metrics the services export: every
//! service runs for real on loopback (E&A, SOS, STUN/TURN with `--metrics-listen`, a peer),
//! each is scraped, and every PromQL expression of the dashboard is taken apart for its
//! metric names, each of which must be a series some service exports (`_bucket`, `_sum`
//! and `_count` only of a histogram, `_total` only of a counter). Each service's
//! `/healthz` and `/readyz` answer 200 on the way.

mod support;

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use support::{
    BIN, create_token, ea_command, enroll, http_get, spawn_cmd, start_ea, start_sos, url_after,
};

/// `path` answers 200 within `within` (readiness may take the peer a moment).
fn answers_200(base: &str, path: &str, ca: &Path, within: Duration) {
    let t0 = Instant::now();
    loop {
        let (code, body) = http_get(base, path, ca);
        if code == 200 {
            return;
        }
        assert!(t0.elapsed() < within, "{base}{path} answers {code}: {body}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every series name an OpenMetrics exposition can have: the samples it shows, and for
/// each family declared by `# TYPE` (also one without samples yet, such as a labelled
/// counter nothing has incremented) the names its type gives its samples.
fn exported_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(decl) = line.strip_prefix("# TYPE ") {
            let mut it = decl.split_whitespace();
            let (Some(family), Some(kind)) = (it.next(), it.next()) else {
                continue;
            };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" | "gaugehistogram" => &["_bucket", "_sum", "_count"],
                "summary" => &["", "_sum", "_count"],
                "info" => &["_info"],
                _ => &[""],
            };
            for s in suffixes {
                names.insert(format!("{family}{s}"));
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_string());
        }
    }
    names
}

/// PromQL words that are not metric names when not followed by `(`.
const KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
    "Inf",
    "NaN",
];

/// The metric names a PromQL expression selects: identifiers outside strings, label
/// matchers `{…}`, ranges `[…]` and grouping lists (`by (…)`), that are not functions
/// (followed by `(`), keywords or numbers.
fn promql_metrics(expr: &str) -> Vec<String> {
    let b = expr.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    // Skip from an opening byte to its closing one (no nesting inside these).
    let skip_to = |i: usize, close: u8| -> usize {
        let mut j = i + 1;
        while j < b.len() && b[j] != close {
            if (b[i] == b'{') && (b[j] == b'"' || b[j] == b'\'') {
                let q = b[j];
                j += 1;
                while j < b.len() && b[j] != q {
                    j += if b[j] == b'\\' { 2 } else { 1 };
                }
            }
            j += 1;
        }
        j + 1
    };
    while i < b.len() {
        let c = b[i];
        match c {
            b'"' | b'\'' | b'`' => i = skip_to(i, c),
            b'{' => i = skip_to(i, b'}'),
            b'[' => i = skip_to(i, b']'),
            b'0'..=b'9' | b'.' => {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                    i += 1;
                }
            }
            _ if c.is_ascii_alphabetic() || c == b'_' || c == b':' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':')
                {
                    i += 1;
                }
                let word = &expr[start..i];
                let mut j = i;
                while j < b.len() && b[j].is_ascii_whitespace() {
                    j += 1;
                }
                // `sum by (le) (…)`: an aggregation with its grouping first is a call too.
                let rest = &expr[j..];
                let grouped_call = ["by", "without"].iter().any(|g| {
                    rest.strip_prefix(g)
                        .is_some_and(|r| r.starts_with([' ', '(']))
                });
                let call = (j < b.len() && b[j] == b'(') || grouped_call;
                let grouping = matches!(
                    word,
                    "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
                );
                if call && grouping {
                    i = skip_to(j, b')'); // a list of label names
                } else if !call && !KEYWORDS.contains(&word) {
                    out.push(word.to_string());
                }
            }
            _ => i += 1,
        }
    }
    out
}

/// Every `expr` in the dashboard (panels, panels inside rows, template queries), with the
/// title of the panel it belongs to.
fn expressions(v: &Value, title: &str, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) => {
            let title = m.get("title").and_then(Value::as_str).unwrap_or(title);
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("expr", Value::String(e)) => out.push((title.to_string(), e.clone())),
                    _ => expressions(x, title, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| expressions(x, title, out)),
        _ => {}
    }
}

/// The dashboard's metric names no exposition in `exported` has, with where they are used.
fn missing(dashboard: &Value, exported: &BTreeSet<String>) -> BTreeMap<String, String> {
    let mut exprs = Vec::new();
    expressions(dashboard, "", &mut exprs);
    assert!(!exprs.is_empty(), "the dashboard has no queries");
    let mut missing = BTreeMap::new();
    for (panel, e) in &exprs {
        let names = promql_metrics(e);
        assert!(!names.is_empty(), "panel {panel:?}: no metric in {e:?}");
        for n in names {
            if !exported.contains(&n) {
                missing.insert(n, format!("panel {panel:?}: {e}"));
            }
        }
    }
    missing
}

#[test]
fn the_checker_takes_promql_apart_and_catches_what_is_not_exported() {
    assert_eq!(
        promql_metrics(
            r#"histogram_quantile(0.99, sum by (le, path) (rate(a_seconds_bucket{path!="/x", q="}"}[$__rate_interval])))"#
        ),
        ["a_seconds_bucket"]
    );
    assert_eq!(
        promql_metrics("count(b == 0) or vector(0) + on (job) group_left c_total offset 5m"),
        ["b", "c_total"]
    );
    let text = "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 0\n# TYPE f counter\n# TYPE g gauge\ng 1\n# EOF\n";
    let exported = exported_names(text);
    let dash = serde_json::json!({"panels": [{"title": "p", "targets": [
        {"expr": "rate(h_count[1m]) + f_total + g"},
        {"expr": "h + f + g_total + h_created_bucket"}
    ]}]});
    let gone: Vec<String> = missing(&dash, &exported).into_keys().collect();
    assert_eq!(gone, ["f", "g_total", "h", "h_created_bucket"]);
}

#[test]
fn every_metric_the_dashboard_queries_is_exported() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("ea");
    let (_ea, ea_url) = start_ea(&mut ea_command(&data, 16));
    let tls = support::sos_tls(&data, &tmp.path().join("sos-tls"));
    let ca = data.join("ca.pem");
    let (_sos, sos_url) = start_sos(
        "127.0.0.1:0",
        &tls,
        tmp.path().join("sos.db").to_str().unwrap(),
        &["--enroll-server", &ea_url],
    );
    let stun = spawn_cmd(
        Command::new(BIN).args([
            "stun-server",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ]),
        2,
    );
    let stun_url = url_after(&stun, "stun-server metrics on ");
    // Two peers: a ring of one is not ready (it has no successor).
    let token = create_token(&data, &["--uses", "2"]);
    let start = |name: &str, first: &[&str]| {
        let dir = tmp.path().join(name);
        enroll(&ea_url, &token, &dir, &[]);
        let mut args = vec!["--listen", "127.0.0.1:0", "--sos", &sos_url];
        args.extend_from_slice(first);
        args.extend_from_slice(support::FAST_TIMERS);
        support::start_peer(&dir, &args, 2)
    };
    let peer = start("a", &["--create"]);
    let boot = peer.bootstrap();
    let _other = start("b", &["--bootstrap", &boot]);
    let control = peer.proc.first_lines[1]
        .strip_prefix("control ")
        .unwrap()
        .to_string();

    let mut exported = BTreeSet::new();
    for (service, base) in [
        ("E&A", &ea_url),
        ("SOS", &sos_url),
        ("STUN/TURN", &stun_url),
        ("peer", &control),
    ] {
        // Probes first: a labelled family is exported from its first series on, and the
        // request counters of E&A and SOS get theirs from these requests, as they would
        // from Prometheus' own first scrape.
        answers_200(base, "/healthz", &ca, Duration::from_secs(5));
        answers_200(base, "/readyz", &ca, Duration::from_secs(30));
        let (code, text) = http_get(base, "/metrics", &ca);
        assert_eq!(code, 200, "{service}: {text}");
        assert!(
            text.ends_with("# EOF\n"),
            "{service}: not OpenMetrics: {text}"
        );
        let names = exported_names(&text);
        let prefix = match service {
            "E&A" => "p2psip_enroll_",
            "SOS" => "p2psip_sos_",
            "STUN/TURN" => "p2psip_stun_",
            _ => "p2psip_peer_",
        };
        assert!(
            names.iter().all(|n| n.starts_with(prefix)),
            "{service} exports a name without {prefix}: {names:?}"
        );
        exported.extend(names);
    }

    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/grafana/p2psip.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    let gone = missing(&dashboard, &exported);
    assert!(
        gone.is_empty(),
        "the dashboard queries metrics no service exports:\n{}",
        gone.iter()
            .map(|(n, at)| format!("  {n}  ({at})"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
