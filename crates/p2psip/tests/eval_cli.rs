//! `p2psip eval` as a user runs it: every file written, the report self-contained with one
//! inline SVG per figure, results.json carrying parameters and raw series, and the page
//! rendered by headless Chromium to a non-trivial screenshot.
#![allow(clippy::unwrap_used)]

mod support;

use support::{ok, run};

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const IDS: [&str; 8] = [
    "fig1-hops",
    "fig2-attack",
    "fig3-srd",
    "fig4-cache",
    "fig5-locality",
    "fig6-trust",
    "fig7-paper",
    "fig8-scaling",
];

/// The scaling file the lab crate's tests read (shape of `scripts/scaling --out`).
const SCALING: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../lab/tests/data/scaling.json"
);

/// Decode a PNG; return (width, height, share of non-white pixels, distinct colours seen).
fn png_stats(path: &Path) -> (u32, u32, f64, usize) {
    let file = std::fs::File::open(path).unwrap();
    let mut dec = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .unwrap();
    let mut buf = vec![0; dec.output_buffer_size().unwrap()];
    let info = dec.next_frame(&mut buf).unwrap();
    let px = info.color_type.samples();
    let data = &buf[..info.buffer_size()];
    let mut ink = 0usize;
    let mut colours = std::collections::BTreeSet::new();
    let n = data.len() / px;
    for p in data.chunks(px) {
        if p[..3.min(px)].iter().any(|&c| c < 240) {
            ink += 1;
        }
        if colours.len() < 1000 {
            colours.insert(p.to_vec());
        }
    }
    (
        info.width,
        info.height,
        ink as f64 / n as f64,
        colours.len(),
    )
}

fn chromium() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Run Chromium with a hard time limit; returns its stdout.
fn run_chromium(bin: &Path, args: &[String]) -> Vec<u8> {
    let mut child = Command::new(bin)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut stdout, &mut v).unwrap();
        v
    });
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "chromium exited with {status}");
            break;
        }
        if start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("chromium did not finish in 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    reader.join().unwrap()
}

fn chromium_args(profile: &Path) -> Vec<String> {
    [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!("--user-data-dir={}", profile.display())])
    .collect()
}

/// `p2psip eval --tiny` writing to `out` with the demo report `demo`, and `extra` flags.
fn tiny_eval(out: &Path, demo: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "eval",
        "--tiny",
        "--out",
        out.to_str().unwrap(),
        "--demo-report",
        demo.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    run(&args)
}

#[test]
fn eval_writes_a_self_contained_report_that_chromium_renders() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let demo = dir.path().join("demo.json");
    std::fs::write(
        &demo,
        r#"{"mode":"loopback","srd_ms":[2.5,3.1,2.8,4.0,3.3,2.9,5.2,3.0]}"#,
    )
    .unwrap();
    ok(tiny_eval(
        &out,
        &demo,
        &["--seed", "3", "--scaling", SCALING],
    ));

    // Every figure as SVG and PNG; the PNGs have drawn content, not a blank canvas.
    for id in IDS {
        let svg = std::fs::read_to_string(out.join(format!("{id}.svg"))).unwrap();
        assert!(svg.contains("<svg") && svg.contains("<text"), "{id}.svg");
        let (w, h, ink, colours) = png_stats(&out.join(format!("{id}.png")));
        assert!(w >= 600 && h >= 200, "{id}.png is {w}x{h}");
        assert!(ink > 0.01 && ink < 0.6, "{id}.png ink share {ink}");
        assert!(colours > 8, "{id}.png has {colours} colours");
    }

    // The report: one inline SVG per figure, every id, nothing fetched.
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert_eq!(html.matches("<svg").count(), IDS.len());
    for id in IDS {
        assert!(html.contains(&format!("id=\"{id}\"")), "{id} missing");
    }
    for banned in [
        "<script", "<link", "<img", "<iframe", "@import", "url(", "src=",
    ] {
        assert!(!html.contains(banned), "report.html contains {banned}");
    }
    assert!(html.contains("seed 3"));
    assert!(html.contains("demo (loopback)"), "demo series in figure 3");
    assert!(
        html.contains("<td>not run: --peers must be between"),
        "figure 8's table names the size that did not run"
    );

    // results.json: parameters, seeds and raw series.
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(v["plan"]["seed"], 3);
    assert_eq!(v["plan"]["mode"], "tiny");
    assert_eq!(
        v["paper"]["simulated"]["secure"]["chosen_route"],
        serde_json::json!([1600, 1618])
    );
    assert_eq!(v["paper"]["simulated"]["chord"]["delivered"], false);
    let sizes = v["plan"]["lookups"]["sizes"].as_array().unwrap().len();
    assert_eq!(v["lookups"].as_array().unwrap().len(), sizes);
    for l in v["lookups"].as_array().unwrap() {
        assert_eq!(l["success_rate"], 1.0, "{l}");
    }
    let a = &v["plan"]["attack"];
    let runs =
        a["fractions"].as_array().unwrap().len() * a["behaviours"].as_array().unwrap().len() * 4;
    assert_eq!(v["attack"]["points"].as_array().unwrap().len(), runs);
    // Shared workloads and run conditions are written flat: the field names stay as they were.
    for k in ["peers", "calls", "call_rate", "warmup_calls"] {
        assert!(a[k].is_number(), "plan.attack.{k}: {a}");
    }
    for q in [&v["attack"]["points"][0], &v["attack"]["srd"][0]] {
        assert!(q["routing"].is_string() && q["trust"].is_string(), "{q}");
        assert!(q["malicious"].is_number(), "{q}");
    }
    assert!(
        !v["attack"]["srd"][0]["setup_ms"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert!(!v["trust"][0]["samples"].as_array().unwrap().is_empty());
    assert_eq!(v["demo"]["srd_ms"].as_array().unwrap().len(), 8);
    assert_eq!(v["cache"][0]["layers"].as_array().unwrap().len(), 3);
    assert_eq!(v["scaling"]["measured"].as_array().unwrap().len(), 3);

    // Headless Chromium: the DOM it loaded has every figure, and the screenshot is not blank.
    let Some(bin) = chromium() else {
        // report.html was checked as text only, not rendered.
        testkit::tool_missing("chromium", "chromium");
        return;
    };
    let url = format!("file://{}", out.join("report.html").display());
    let mut args = chromium_args(&dir.path().join("profile-dom"));
    args.extend(["--dump-dom".to_string(), url.clone()]);
    let dom = String::from_utf8_lossy(&run_chromium(&bin, &args)).into_owned();
    assert_eq!(
        dom.matches("<svg").count(),
        IDS.len(),
        "DOM: {}",
        &dom[..dom.len().min(500)]
    );
    for id in IDS {
        assert!(dom.contains(&format!("id=\"{id}\"")), "{id} not in the DOM");
    }
    let shot = dir.path().join("report.png");
    let mut args = chromium_args(&dir.path().join("profile-shot"));
    args.extend([
        format!("--screenshot={}", shot.display()),
        "--window-size=1200,4000".to_string(),
        url,
    ]);
    run_chromium(&bin, &args);
    let (w, h, ink, colours) = png_stats(&shot);
    assert_eq!((w, h), (1200, 4000));
    assert!(ink > 0.02, "screenshot nearly blank: ink {ink}");
    assert!(colours > 50, "screenshot has {colours} colours");
}

#[test]
fn eval_rejects_a_bad_demo_report() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let missing = dir.path().join("nope.json");
    let eval = tiny_eval(&out, &missing, &[]);
    assert!(!eval.status.success());
    let err = String::from_utf8_lossy(&eval.stderr);
    assert!(err.contains("nope.json"), "{err}");
    assert!(!out.join("report.html").exists());
}
