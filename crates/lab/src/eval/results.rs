//! What one evaluation produced, as results.json holds it, and the demo report it may
//! take real setup delays from.

use super::experiments::{self, Plan};
use crate::LabError;
use serde::Serialize;
use std::path::Path;

/// Real setup delays from a demo run, for figure 3.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct DemoSrd {
    /// Where they came from.
    pub(crate) file: String,
    /// The report's `mode` ("simulated", "loopback", …).
    pub(crate) mode: String,
    /// Raw samples, sorted (may be empty when only percentiles were given).
    pub(crate) srd_ms: Vec<f64>,
    /// (delay, cumulative share) points when only percentiles were given.
    pub(crate) percentiles: Vec<(f64, f64)>,
}

/// Wall time of one experiment.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Timing {
    pub(crate) experiment: &'static str,
    pub(crate) wall_s: f64,
}

/// Everything a report shows, as written to results.json.
#[derive(Debug, Serialize)]
pub(crate) struct Results {
    pub(crate) tool: &'static str,
    pub(crate) version: &'static str,
    pub(crate) plan: Plan,
    pub(crate) lookups: Vec<sim::LookupReport>,
    pub(crate) attack: experiments::AttackResults,
    pub(crate) cache: Vec<experiments::CachePoint>,
    pub(crate) locality: experiments::LocalityResults,
    pub(crate) trust: Vec<experiments::TrustRun>,
    pub(crate) paper: experiments::PaperResults,
    pub(crate) demo: Option<DemoSrd>,
    /// The scaling curve (`--scaling FILE`), if given.
    pub(crate) scaling: Option<super::scaling::Curve>,
    pub(crate) timings: Vec<Timing>,
    pub(crate) wall_s: f64,
}

/// Largest demo report read, bytes.
const MAX_DEMO_REPORT: u64 = 64 << 20;

/// Most SRD samples taken from a demo report.
const MAX_DEMO_SAMPLES: usize = 1_000_000;

/// Read `path` as JSON (what eval takes from other tools: demo reports, scaling curves),
/// refusing a file over `max` bytes; `bad` words a file that is too large or not JSON.
pub(crate) fn read_json(
    path: &Path,
    max: u64,
    what: &'static str,
    bad: impl Fn(String) -> LabError,
) -> Result<serde_json::Value, LabError> {
    let len = std::fs::metadata(path)
        .map_err(LabError::io(what, path))?
        .len();
    if len > max {
        return Err(bad(format!("{len} bytes; at most {max} are read")));
    }
    let text = std::fs::read_to_string(path).map_err(LabError::io(what, path))?;
    serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))
}

/// The text of `key` in a JSON object read from a file, at most `max` characters of it
/// (what the report prints stays short whatever the file holds); `default` when absent.
pub(crate) fn text_field(v: &serde_json::Value, key: &str, default: &str, max: usize) -> String {
    v.get(key)
        .and_then(|t| t.as_str())
        .unwrap_or(default)
        .chars()
        .take(max)
        .collect()
}

/// Read the setup delays of a demo report (`p2psip demo --json`): its `srd_ms` samples, or
/// else its `srd_ms_p50` and `srd_ms_p99`.
pub(crate) fn load_demo(path: &Path) -> Result<DemoSrd, LabError> {
    let bad = |reason: String| LabError::DemoReport {
        path: path.to_path_buf(),
        reason,
    };
    let v = read_json(path, MAX_DEMO_REPORT, "reading the demo report", bad)?;
    let mode = text_field(&v, "mode", "demo", 40);
    let good = |x: f64| x.is_finite() && x >= 0.0;
    let mut srd_ms = Vec::new();
    if let Some(a) = v.get("srd_ms").and_then(|a| a.as_array()) {
        for x in a.iter().take(MAX_DEMO_SAMPLES) {
            match x.as_f64() {
                Some(x) if good(x) => srd_ms.push(x),
                _ => return Err(bad(format!("srd_ms holds {x}, not a delay in ms"))),
            }
        }
    }
    srd_ms.sort_by(f64::total_cmp);
    let mut percentiles = Vec::new();
    if srd_ms.is_empty() {
        for (key, share) in [("srd_ms_p50", 0.5), ("srd_ms_p99", 0.99)] {
            if let Some(x) = v.get(key).and_then(|x| x.as_f64())
                && good(x)
            {
                percentiles.push((x, share));
            }
        }
    }
    if srd_ms.is_empty() && percentiles.is_empty() {
        return Err(bad(
            "no setup delays: expected `srd_ms` (array) or `srd_ms_p50`/`srd_ms_p99`".into(),
        ));
    }
    Ok(DemoSrd {
        file: path.display().to_string(),
        mode,
        srd_ms,
        percentiles,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_report_samples_or_percentiles() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.json");
        std::fs::write(&a, r#"{"mode":"loopback","srd_ms":[3.0,1.5,2.0]}"#).unwrap();
        let d = load_demo(&a).unwrap();
        assert_eq!(d.srd_ms, vec![1.5, 2.0, 3.0]);
        assert_eq!(d.mode, "loopback");
        let b = dir.path().join("b.json");
        std::fs::write(&b, r#"{"srd_ms_p50":4.0,"srd_ms_p99":9.5}"#).unwrap();
        let d = load_demo(&b).unwrap();
        assert_eq!(d.percentiles, vec![(4.0, 0.5), (9.5, 0.99)]);
        assert_eq!(d.mode, "demo");
        let c = dir.path().join("c.json");
        std::fs::write(&c, r#"{"calls":3}"#).unwrap();
        assert!(
            load_demo(&c)
                .unwrap_err()
                .to_string()
                .contains("no setup delays")
        );
        std::fs::write(&c, r#"{"srd_ms":[1,"x"]}"#).unwrap();
        assert!(load_demo(&c).is_err());
        std::fs::write(&c, "not json").unwrap();
        assert!(load_demo(&c).is_err());
    }
}
