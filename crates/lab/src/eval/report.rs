//! Writing a report: results.json, each figure as SVG and PNG, and report.html with the SVGs
//! inline (no scripts, no external style sheets or fonts, nothing fetched).

use super::figures;
use super::plot::{Figure, PlotError};
use super::results::Results;
use crate::LabError;
use std::fmt::Write as _;
use std::path::Path;

/// Escape text for HTML element content and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Make an SVG scale with the page: give it a viewBox if plotters did not.
fn responsive(svg: &str) -> String {
    if svg.contains("viewBox") {
        return svg.to_string();
    }
    let num = |key: &str| -> Option<u32> {
        let i = svg.find(&format!("{key}=\""))? + key.len() + 2;
        let rest = &svg[i..];
        rest[..rest.find('"')?].parse().ok()
    };
    match (num("width"), num("height")) {
        (Some(w), Some(h)) => svg.replacen("<svg ", &format!("<svg viewBox=\"0 0 {w} {h}\" "), 1),
        _ => svg.to_string(),
    }
}

const STYLE: &str = "body{font-family:sans-serif;max-width:1300px;margin:1.5em auto;padding:0 1em;\
color:#222;line-height:1.45}h1{font-size:1.6em}h2{font-size:1.2em;margin-top:2em}\
section.figure svg{width:100%;height:auto;border:1px solid #ddd}\
p.caption{font-size:.92em;color:#333}p.files{font-size:.85em}\
table{border-collapse:collapse;font-size:.9em;margin:.8em 0}\
td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}\
th{background:#eef2f8}code{background:#f4f4f4;padding:0 .2em}";

/// Write everything; returns how many figures were written.
pub(crate) fn write(dir: &Path, r: &Results) -> Result<usize, LabError> {
    let figs = figures::all(r);
    let json = serde_json::to_string_pretty(r).map_err(LabError::json("the results"))?;
    let path = dir.join("results.json");
    std::fs::write(&path, json).map_err(LabError::io("writing", path))?;
    let mut sections = String::new();
    for f in &figs {
        let figure = |e: PlotError| LabError::Figure {
            figure: f.id.to_string(),
            source: Box::new(e),
        };
        let svg = f.svg().map_err(figure)?;
        let png = f.png().map_err(figure)?;
        let path = dir.join(format!("{}.svg", f.id));
        std::fs::write(&path, &svg).map_err(LabError::io("writing", path))?;
        let path = dir.join(format!("{}.png", f.id));
        std::fs::write(&path, &png).map_err(LabError::io("writing", path))?;
        sections.push_str(&section(f, &svg, r));
    }
    let p = &r.plan;
    let mode = format!("{:?}", p.mode).to_lowercase();
    let flag = match p.mode {
        super::experiments::Mode::Full => String::new(),
        _ => format!(" --{mode}"),
    };
    let mut nav = String::new();
    for f in &figs {
        let _ = write!(nav, "<li><a href=\"#{}\">{}</a></li>", f.id, esc(&f.title));
    }
    let timings: Vec<String> = r
        .timings
        .iter()
        .map(|t| format!("{} {:.1} s", t.experiment, t.wall_s))
        .collect();
    let html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>p2psip evaluation ({mode}, seed {seed})</title><style>{STYLE}</style></head><body>\n\
<h1>p2psip evaluation</h1>\n\
<p>Secure and efficient P2PSIP after Zheng &amp; Oleshchuk: every figure below is produced by \
<code>p2psip eval{flag} --seed {seed}</code> (p2psip {version}) from the simulator, the trust \
arithmetic and the E&amp;A locality code; the same command with the same seed gives the same \
numbers. Mode <b>{mode}</b>, {wall:.1} s wall ({timings}). Raw series, parameters and seeds: \
<a href=\"results.json\">results.json</a>.</p>\n<ol>{nav}</ol>\n{sections}</body></html>\n",
        seed = p.seed,
        version = esc(r.version),
        wall = r.wall_s,
        timings = esc(&timings.join(", ")),
    );
    let path = dir.join("report.html");
    std::fs::write(&path, html).map_err(LabError::io("writing", path))?;
    Ok(figs.len())
}

fn section(f: &Figure, svg: &str, r: &Results) -> String {
    let mut extra = String::new();
    if f.id == "fig7-paper" {
        extra.push_str(
            "<table><tr><th>quantity</th><th>the paper prints</th><th>this build</th>\
             <th>agrees</th></tr>",
        );
        for row in figures::paper_rows(r) {
            extra.push_str("<tr>");
            for cell in row {
                let _ = write!(extra, "<td>{}</td>", esc(&cell));
            }
            extra.push_str("</tr>");
        }
        extra.push_str("</table>");
    }
    if let (true, Some(c)) = (f.id == "fig8-scaling", &r.scaling) {
        extra.push_str("<table>");
        for (i, row) in super::scaling::rows(c).iter().enumerate() {
            let cell = if i == 0 { "th" } else { "td" };
            extra.push_str("<tr>");
            for text in row {
                let _ = write!(extra, "<{cell}>{}</{cell}>", esc(text));
            }
            extra.push_str("</tr>");
        }
        extra.push_str("</table>");
    }
    format!(
        "<section class=\"figure\" id=\"{id}\"><h2>{title}</h2>\n{svg}\n{extra}\
<p class=\"caption\">{caption}</p><p class=\"files\"><a href=\"{id}.svg\">{id}.svg</a> · \
<a href=\"{id}.png\">{id}.png</a></p></section>\n",
        id = f.id,
        title = esc(&f.title),
        svg = responsive(
            svg.trim_start_matches("<?xml version=\"1.0\" encoding=\"UTF-8\"?>")
                .trim()
        ),
        caption = esc(&f.caption),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_viewbox() {
        assert_eq!(esc("d > b & <x>"), "d &gt; b &amp; &lt;x&gt;");
        let s = responsive("<svg width=\"10\" height=\"20\" xmlns=\"x\"></svg>");
        assert!(s.starts_with("<svg viewBox=\"0 0 10 20\" width"), "{s}");
    }
}
