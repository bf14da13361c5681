//! The scaling curve: real `p2psip demo` runs at growing sizes, as `scripts/scaling` writes
//! them, read back and drawn against the number of peers (log2 axis). The numbers are
//! measurements of real TLS peers on this host, so the report takes them from a file rather
//! than running them: a curve up to 1 024 peers takes ten minutes or more.

use super::plot::{Axis, Figure, Legend, Panel, Scale, Series, Style};
use crate::LabError;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// One size that ran: what its demo report said.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Measured {
    /// Peers that ran (all of those asked for: `scripts/scaling` records a size the process
    /// cannot hold as not run).
    pub(crate) peers: u64,
    /// Seconds from starting the peers until every layer ring is right.
    pub(crate) converge_s: f64,
    /// Resident memory the overlay added, per peer, KiB.
    pub(crate) rss_kib_per_peer: f64,
    /// CPU the process used at rest, in cores.
    pub(crate) at_rest_cores: f64,
    /// Overlay messages received per peer per second at rest.
    pub(crate) at_rest_messages_per_peer_per_s: f64,
    /// TLS connections dialled per second at rest (the whole overlay).
    pub(crate) at_rest_tls_dials_per_s: f64,
    /// Links closed per second at rest to make room under the descriptor budget.
    pub(crate) at_rest_links_evicted_per_s: f64,
    /// Links open per peer at the end of the rest window.
    pub(crate) at_rest_links_per_peer: f64,
    /// An ordinary peer's share of the links (the process's descriptors split among peers).
    pub(crate) peer_links: u64,
    /// Session request delay of the random calls, median and 99th percentile, ms.
    pub(crate) srd_ms_p50: f64,
    pub(crate) srd_ms_p99: f64,
    /// Calls placed and the share that rang.
    pub(crate) calls_attempted: u64,
    pub(crate) ring_rate: f64,
    /// The one-minute load average when the run ended (other work shares the cores).
    pub(crate) load1: f64,
}

/// One size that did not run, and why.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct NotRun {
    pub(crate) peers: u64,
    pub(crate) reason: String,
}

/// A scaling file: the runs, the sizes that could not run, and the command that made it.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Curve {
    /// Where it came from.
    pub(crate) file: String,
    /// The command line that produced it.
    pub(crate) command: String,
    /// Sizes that ran, smallest first.
    pub(crate) measured: Vec<Measured>,
    /// Sizes that did not.
    pub(crate) not_run: Vec<NotRun>,
}

/// Largest scaling file read, bytes.
const MAX_FILE: u64 = 1 << 20;

/// Most rows read.
const MAX_ROWS: usize = 64;

/// Read a scaling file (`scripts/scaling --out FILE`): `{"command": …, "rows": [{"peers": N,
/// "run": true, …numbers…} | {"peers": N, "run": false, "reason": …}]}`.
pub(crate) fn load(path: &Path) -> Result<Curve, LabError> {
    let bad = |reason: String| LabError::ScalingFile {
        path: path.to_path_buf(),
        reason,
    };
    let v = super::results::read_json(path, MAX_FILE, "reading the scaling file", bad)?;
    let rows = v
        .get("rows")
        .and_then(|r| r.as_array())
        .ok_or_else(|| bad("no `rows` array".into()))?;
    if rows.len() > MAX_ROWS {
        return Err(bad(format!(
            "{} rows; at most {MAX_ROWS} are read",
            rows.len()
        )));
    }
    let mut measured = Vec::new();
    let mut not_run = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let row_err = |e: serde_json::Error| bad(format!("row {}: {e}", i + 1));
        match row.get("run").and_then(|r| r.as_bool()) {
            Some(true) => {
                let m: Measured = serde_json::from_value(row.clone()).map_err(row_err)?;
                let numbers = [
                    m.converge_s,
                    m.rss_kib_per_peer,
                    m.at_rest_cores,
                    m.at_rest_messages_per_peer_per_s,
                    m.at_rest_tls_dials_per_s,
                    m.at_rest_links_evicted_per_s,
                    m.at_rest_links_per_peer,
                    m.srd_ms_p50,
                    m.srd_ms_p99,
                    m.ring_rate,
                    m.load1,
                ];
                if m.peers == 0 || numbers.iter().any(|x| !x.is_finite() || *x < 0.0) {
                    return Err(bad(format!(
                        "row {}: peers must be positive and every number finite and not \
                         negative",
                        i + 1
                    )));
                }
                measured.push(m);
            }
            Some(false) => {
                let mut n: NotRun = serde_json::from_value(row.clone()).map_err(row_err)?;
                n.reason = n.reason.chars().take(400).collect();
                not_run.push(n);
            }
            None => {
                return Err(bad(format!("row {}: no boolean `run`", i + 1)));
            }
        }
    }
    if measured.is_empty() && not_run.is_empty() {
        return Err(bad("no rows".into()));
    }
    measured.sort_by_key(|m| m.peers);
    not_run.sort_by_key(|n| n.peers);
    let command = super::results::text_field(&v, "command", "", 400);
    Ok(Curve {
        file: path.display().to_string(),
        command,
        measured,
        not_run,
    })
}

/// A series of `y` against log2(peers) over the sizes that ran.
fn series(
    c: &Curve,
    name: &str,
    color: usize,
    style: Style,
    y: impl Fn(&Measured) -> f64,
) -> Series {
    let pts = c
        .measured
        .iter()
        .map(|m| ((m.peers as f64).log2(), y(m)))
        .collect();
    Series::new(name, color, style, pts)
}

/// A panel against the number of peers, powers of two labelled, from half a step below the
/// smallest size to half a step above the largest (asked for, run or not).
fn panel(c: &Curve, title: &str, y_label: &str, series: Vec<Series>) -> Panel {
    let sizes = c
        .measured
        .iter()
        .map(|m| m.peers)
        .chain(c.not_run.iter().map(|n| n.peers))
        .map(|p| (p.max(1) as f64).log2());
    let (lo, hi) = sizes.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    let (lo, hi) = if lo.is_finite() {
        (lo, hi)
    } else {
        (7.0, 11.0)
    };
    // Headroom above the largest value holds the legend, clear of the points; an all-zero
    // panel still gets a readable scale.
    let top = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max);
    let top = if top > 0.0 { top } else { 1.0 };
    let y = Axis::lin(0.0, top * 1.45);
    let x_label = if c.not_run.is_empty() {
        "peers (log2 scale)".to_string()
    } else {
        let sizes: Vec<String> = c.not_run.iter().map(|n| n.peers.to_string()).collect();
        format!("peers (log2 scale; not run: {})", sizes.join(", "))
    };
    let mut p = Panel::new(
        title,
        x_label,
        y_label,
        Axis::lin(lo.floor() - 0.5, hi.ceil() + 0.5),
        y,
    );
    p.x.scale = Scale::Pow2;
    p.y.label_max = Some(top * 1.1);
    p.legend = Legend::UpperLeft;
    p.series = series;
    p
}

/// The scaling figure: converge time, memory per peer, CPU, messages and dials at rest, and
/// the call set-up delay, each against the number of peers.
pub(crate) fn figure(curve: Option<&Curve>) -> Figure {
    let Some(c) = curve else {
        let mut p = Panel::new(
            "scaling curve",
            "peers (log2 scale)",
            "",
            Axis::lin(6.5, 11.5),
            Axis::lin(0.0, 1.0),
        );
        p.x.scale = Scale::Pow2;
        p.note = Some("No scaling file given (--scaling FILE): run scripts/scaling".into());
        return Figure {
            id: "fig8-scaling",
            title: "8. Scaling curve (real TLS peers)".into(),
            caption: "Not measured in this report. `scripts/scaling --out scaling.json` runs \
                      `p2psip demo` at 128, 256, 512, 1 024 and 2 048 peers (ten minutes or more on \
                      a release build; `--sizes 128` for a quick one) and \
                      `p2psip eval --scaling scaling.json` draws it here."
                .into(),
            panels: vec![p],
            columns: 1,
            panel_size: super::plot::PANEL,
            table: None,
        };
    };
    let line = Style::LineMarkers;
    let panels = vec![
        panel(
            c,
            "rings converged",
            "seconds",
            vec![series(c, "converge time", 0, line, |m| m.converge_s)],
        ),
        panel(
            c,
            "memory",
            "RSS per peer, KiB",
            vec![series(c, "RSS per peer", 1, line, |m| m.rss_kib_per_peer)],
        ),
        panel(
            c,
            "CPU at rest",
            "cores busy",
            vec![series(c, "process CPU", 2, line, |m| m.at_rest_cores)],
        ),
        panel(
            c,
            "messages at rest",
            "overlay messages per peer per s",
            vec![series(c, "received", 3, line, |m| {
                m.at_rest_messages_per_peer_per_s
            })],
        ),
        panel(
            c,
            "links at rest",
            "per second, whole overlay",
            vec![
                series(c, "TLS dials", 4, line, |m| m.at_rest_tls_dials_per_s),
                series(c, "links closed to make room", 6, line, |m| {
                    m.at_rest_links_evicted_per_s
                }),
            ],
        ),
        panel(
            c,
            "session request delay",
            "INVITE to 180 Ringing, ms",
            vec![
                series(c, "p50", 0, line, |m| m.srd_ms_p50),
                series(c, "p99", 1, line, |m| m.srd_ms_p99),
            ],
        ),
    ];
    let not_run: Vec<String> = c
        .not_run
        .iter()
        .map(|n| format!("{} peers not run: {}", n.peers, n.reason))
        .collect();
    let not_run = if not_run.is_empty() {
        String::new()
    } else {
        format!(" {}.", not_run.join("; "))
    };
    let command = if c.command.is_empty() {
        String::new()
    } else {
        format!(" Command: {}.", c.command)
    };
    Figure {
        id: "fig8-scaling",
        title: "8. Scaling curve (real TLS peers)".into(),
        caption: format!(
            "Each point is one `p2psip demo` run of that many real mutual-TLS peers in one \
             process on this host (the paper's layout, m = 11; from {}): converge time, the \
             resident memory the overlay added per peer, and, after the random calls and a \
             rest, the process's CPU, the overlay messages each peer received and the TLS \
             dials and make-room closes over the whole overlay per second; SRD of the random \
             calls. The peers share the process's descriptors, so a peer's link share falls \
             as the size grows (table) and links are closed to make room and dialled again. \
             Measured on a shared 2-core machine (load average in the table).{}{}",
            c.file, not_run, command
        ),
        panels,
        columns: 3,
        panel_size: (500, 380),
        table: None,
    }
}

/// The scaling figure's numbers as table rows (header first), for the report.
pub(crate) fn rows(c: &Curve) -> Vec<Vec<String>> {
    let mut out = vec![
        [
            "peers",
            "converge s",
            "RSS KiB/peer",
            "CPU at rest, cores",
            "msgs/peer/s at rest",
            "TLS dials/s at rest",
            "closed to make room/s",
            "links/peer (share)",
            "SRD p50 / p99 ms",
            "calls rang",
            "load avg",
        ]
        .map(String::from)
        .to_vec(),
    ];
    let mut all: Vec<(u64, Vec<String>)> = c
        .measured
        .iter()
        .map(|m| {
            (
                m.peers,
                vec![
                    m.peers.to_string(),
                    format!("{:.1}", m.converge_s),
                    format!("{:.0}", m.rss_kib_per_peer),
                    format!("{:.2}", m.at_rest_cores),
                    format!("{:.2}", m.at_rest_messages_per_peer_per_s),
                    format!("{:.1}", m.at_rest_tls_dials_per_s),
                    format!("{:.1}", m.at_rest_links_evicted_per_s),
                    format!("{:.1} ({})", m.at_rest_links_per_peer, m.peer_links),
                    format!("{:.1} / {:.1}", m.srd_ms_p50, m.srd_ms_p99),
                    format!(
                        "{:.1}% of {}",
                        100.0 * m.ring_rate.min(1.0),
                        m.calls_attempted
                    ),
                    format!("{:.2}", m.load1),
                ],
            )
        })
        .collect();
    for n in &c.not_run {
        let mut r = vec![n.peers.to_string(), format!("not run: {}", n.reason)];
        r.resize(11, String::new());
        all.push((n.peers, r));
    }
    all.sort_by_key(|(p, _)| *p);
    out.extend(all.into_iter().map(|(_, r)| r));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The checked-in example: three sizes that ran and one that did not.
    const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/scaling.json");

    #[test]
    fn fixture_loads_and_draws() {
        let c = load(Path::new(FIXTURE)).unwrap();
        assert_eq!(
            c.measured.iter().map(|m| m.peers).collect::<Vec<_>>(),
            vec![128, 256, 512]
        );
        assert_eq!(c.not_run.len(), 1);
        assert_eq!(c.not_run[0].peers, 2048);
        let f = figure(Some(&c));
        assert_eq!(f.panels.len(), 6);
        // x is log2(peers): 128 → 7.
        assert_eq!(f.panels[0].series[0].points[0].0, 7.0);
        assert_eq!(f.panels[0].series[0].points[2].1, c.measured[2].converge_s);
        assert!(f.caption.contains("2048 peers not run"), "{}", f.caption);
        assert!(f.panels[5].x.label.contains("not run: 2048"));
        let svg = f.svg().unwrap();
        assert!(
            svg.contains("1024") && svg.contains("128"),
            "x ticks in 2^k"
        );
        let table = rows(&c);
        assert_eq!(table.len(), 5);
        assert!(table[4][1].starts_with("not run"), "{:?}", table[4]);
        assert!(table.iter().all(|r| r.len() == table[0].len()));
    }

    #[test]
    fn without_a_file_the_figure_says_how_to_make_one() {
        let f = figure(None);
        assert!(f.caption.contains("scripts/scaling"));
        assert!(
            f.panels[0]
                .note
                .as_deref()
                .unwrap_or("")
                .contains("--scaling")
        );
        f.svg().unwrap();
    }

    #[test]
    fn bad_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.json");
        for (text, why) in [
            ("not json", "not JSON"),
            (r#"{"rows": 3}"#, "no `rows`"),
            (r#"{"rows": []}"#, "no rows"),
            (r#"{"rows": [{"peers": 128}]}"#, "no boolean `run`"),
            (r#"{"rows": [{"peers": 128, "run": true}]}"#, "row 1"),
            (r#"{"rows": [{"peers": 2048, "run": false}]}"#, "reason"),
        ] {
            std::fs::write(&p, text).unwrap();
            let e = load(&p).unwrap_err().to_string();
            assert!(e.contains(why), "{text}: {e}");
        }
        let fixture = std::fs::read_to_string(FIXTURE).unwrap();
        std::fs::write(
            &p,
            fixture.replacen("\"converge_s\": ", "\"converge_s\": -", 1),
        )
        .unwrap();
        let e = load(&p).unwrap_err().to_string();
        assert!(e.contains("finite and not negative"), "{e}");
    }
}
