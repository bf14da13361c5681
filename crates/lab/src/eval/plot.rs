//! Figures as data, drawn twice by plotters: to an SVG string (inlined in the report) and to a
//! PNG (RGB buffer, encoded with `png`). Text in the PNG is rendered with the embedded
//! DejaVu Sans (see `assets/fonts/LICENSE-DejaVu.txt`); the SVG names `sans-serif` and lets
//! the browser pick.

use plotters::coord::Shift;
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;
use std::sync::Once;

/// Why a figure could not be drawn or encoded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PlotError {
    /// plotters refused a drawing step. Its error type is generic over the backend (SVG
    /// or bitmap), so it is kept as text.
    #[error("{step}: {reason}")]
    Draw {
        /// The step: `fill`, `title`, `table`, `svg`, `bitmap`, or a panel's axes and series.
        step: &'static str,
        /// What plotters said.
        reason: String,
    },
    /// A panel of the figure failed.
    #[error("panel {panel:?}")]
    Panel {
        /// The panel's title.
        panel: String,
        /// Why.
        #[source]
        source: Box<PlotError>,
    },
    /// The PNG encoder failed.
    #[error("encoding the PNG")]
    Png(#[from] png::EncodingError),
}

/// A `map_err` for a plotters drawing `step`.
fn drawing<E: std::fmt::Display>(step: &'static str) -> impl Fn(E) -> PlotError + Copy {
    move |e| PlotError::Draw {
        step,
        reason: e.to_string(),
    }
}

/// The embedded font (DejaVu Sans, Bitstream Vera licence, see assets/fonts/).
static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

/// Pixel size of one panel, unless a figure says otherwise.
pub(crate) const PANEL: (u32, u32) = (620, 430);
/// Height of the figure title band.
const TITLE_H: u32 = 44;

/// Colour-blind-safe palette (Okabe–Ito), then black.
const PALETTE: [RGBColor; 8] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(120, 120, 120),
    RGBColor(0, 0, 0),
];

/// One axis: range, scale, what it shows, and how far up its ticks are labelled.
#[derive(Clone, Debug)]
pub(crate) struct Axis {
    pub(crate) min: f64,
    pub(crate) max: f64,
    pub(crate) scale: Scale,
    /// The quantity and unit, written along the axis.
    pub(crate) label: String,
    /// No tick labels above this (room for the legend above the data).
    pub(crate) label_max: Option<f64>,
}

impl Axis {
    pub(crate) fn lin(min: f64, max: f64) -> Self {
        Axis {
            min,
            max: if max > min { max } else { min + 1.0 },
            scale: Scale::Lin,
            label: String::new(),
            label_max: None,
        }
    }
    pub(crate) fn log(min: f64, max: f64) -> Self {
        let min = min.max(f64::MIN_POSITIVE);
        Axis {
            min,
            max: if max > min { max } else { min * 10.0 },
            scale: Scale::Log,
            label: String::new(),
            label_max: None,
        }
    }
    /// A linear axis from 0 to a little above the largest value.
    pub(crate) fn lin_to(values: impl IntoIterator<Item = f64>) -> Self {
        let max = values
            .into_iter()
            .filter(|v| v.is_finite())
            .fold(0.0f64, f64::max);
        Axis::lin(0.0, (max * 1.1).max(1e-9))
    }

    fn is_log(&self) -> bool {
        self.scale == Scale::Log
    }

    /// The text of the tick at `v`.
    fn tick_label(&self, v: f64) -> String {
        if self.label_max.is_some_and(|m| v > m + 1e-9) {
            return String::new();
        }
        match self.scale {
            Scale::Lin => tick(v),
            Scale::Log => log_tick(v),
            Scale::Pow2 => pow2_tick(v),
            Scale::Percent => percent(v),
        }
    }
}

/// How an axis is scaled and how its ticks read.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Scale {
    /// Linear, plain numbers.
    Lin,
    /// Logarithmic, ticks at 1, 2 and 5 times a power of ten.
    Log,
    /// Linear in log2 of the quantity: whole values v read as 2^v, others not at all (a
    /// log2 axis, which plotters' log scale with its 1-2-5 ticks does not draw).
    Pow2,
    /// Linear, ticks as percentages.
    Percent,
}

/// How a series is drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Style {
    /// Solid line with round markers.
    LineMarkers,
    /// Solid line only.
    Line,
    /// Dashed line (references, theory).
    Dashed,
    /// Markers only.
    Markers,
}

/// One named series.
#[derive(Clone, Debug)]
pub(crate) struct Series {
    pub(crate) name: String,
    pub(crate) points: Vec<(f64, f64)>,
    pub(crate) color: usize,
    pub(crate) style: Style,
}

impl Series {
    pub(crate) fn new(
        name: impl Into<String>,
        color: usize,
        style: Style,
        points: Vec<(f64, f64)>,
    ) -> Self {
        Series {
            name: name.into(),
            points,
            color,
            style,
        }
    }
}

/// Where the legend goes.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Legend {
    UpperLeft,
    UpperRight,
    LowerLeft,
    LowerRight,
}

/// One chart.
#[derive(Clone, Debug)]
pub(crate) struct Panel {
    pub(crate) title: String,
    pub(crate) x: Axis,
    pub(crate) y: Axis,
    pub(crate) series: Vec<Series>,
    pub(crate) legend: Legend,
    /// A remark printed inside the plot area (e.g. "no demo report given").
    pub(crate) note: Option<String>,
}

impl Panel {
    pub(crate) fn new(
        title: impl Into<String>,
        x_label: impl Into<String>,
        y_label: impl Into<String>,
        x: Axis,
        y: Axis,
    ) -> Self {
        Panel {
            title: title.into(),
            x: Axis {
                label: x_label.into(),
                ..x
            },
            y: Axis {
                label: y_label.into(),
                ..y
            },
            series: Vec::new(),
            legend: Legend::LowerRight,
            note: None,
        }
    }
}

/// A table drawn as a figure: a header row and text rows; `widths` are column pixels.
#[derive(Clone, Debug)]
pub(crate) struct Table {
    pub(crate) header: Vec<String>,
    pub(crate) rows: Vec<Vec<String>>,
    pub(crate) widths: Vec<u32>,
}

const ROW_H: u32 = 30;

/// A figure: a title, one or more panels in a grid (or a table), and a caption (HTML only).
#[derive(Clone, Debug)]
pub(crate) struct Figure {
    /// Element id in the report and file stem (`fig1-hops` → fig1-hops.svg/.png).
    pub(crate) id: &'static str,
    pub(crate) title: String,
    /// Names the experiment's parameters and seed.
    pub(crate) caption: String,
    pub(crate) panels: Vec<Panel>,
    pub(crate) columns: usize,
    /// Pixel size of each panel.
    pub(crate) panel_size: (u32, u32),
    /// Drawn instead of panels when set.
    pub(crate) table: Option<Table>,
}

impl Figure {
    fn size(&self) -> (u32, u32) {
        if let Some(t) = &self.table {
            let w = t.widths.iter().sum::<u32>() + 28;
            return (w, TITLE_H + ROW_H * (t.rows.len() as u32 + 1) + 16);
        }
        let cols = self.columns.clamp(1, self.panels.len().max(1));
        let rows = self.panels.len().div_ceil(cols).max(1);
        let (w, h) = self.panel_size;
        (w * cols as u32, TITLE_H + h * rows as u32)
    }

    /// The figure as a standalone SVG document.
    pub(crate) fn svg(&self) -> Result<String, PlotError> {
        register_font();
        let mut out = String::new();
        {
            let root = SVGBackend::with_string(&mut out, self.size()).into_drawing_area();
            self.draw(&root)?;
            root.present().map_err(drawing("svg"))?;
        }
        Ok(out)
    }

    /// The figure as PNG bytes.
    pub(crate) fn png(&self) -> Result<Vec<u8>, PlotError> {
        register_font();
        let (w, h) = self.size();
        let mut rgb = vec![255u8; (w * h * 3) as usize];
        {
            let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
            self.draw(&root)?;
            root.present().map_err(drawing("bitmap"))?;
        }
        encode_png(&rgb, w, h)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), PlotError> {
        root.fill(&WHITE).map_err(drawing("fill"))?;
        let (title, body) = root.split_vertically(TITLE_H);
        title
            .draw(&Text::new(
                self.title.clone(),
                (14, 12),
                ("sans-serif", 22).into_font().color(&BLACK),
            ))
            .map_err(drawing("title"))?;
        if let Some(t) = &self.table {
            return draw_table(&body, t);
        }
        let cols = self.columns.clamp(1, self.panels.len().max(1));
        let rows = self.panels.len().div_ceil(cols).max(1);
        let areas = body.split_evenly((rows, cols));
        for (panel, area) in self.panels.iter().zip(areas.iter()) {
            draw_panel(area, panel).map_err(|e| PlotError::Panel {
                panel: panel.title.clone(),
                source: Box::new(e),
            })?;
        }
        Ok(())
    }
}

fn draw_table<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    t: &Table,
) -> Result<(), PlotError> {
    let err = drawing::<DrawingAreaErrorKind<DB::ErrorType>>("table");
    let total: u32 = t.widths.iter().sum();
    let x0 = 14i32;
    let line = |y: i32| {
        PathElement::new(
            vec![(x0, y), (x0 + total as i32, y)],
            RGBColor(190, 190, 190),
        )
    };
    let rows = std::iter::once(&t.header).chain(&t.rows);
    for (r, row) in rows.enumerate() {
        let y = (r as u32 * ROW_H) as i32;
        if r == 0 {
            area.draw(&Rectangle::new(
                [(x0, y), (x0 + total as i32, y + ROW_H as i32)],
                RGBColor(236, 240, 246).filled(),
            ))
            .map_err(err)?;
        }
        let mut x = x0;
        for (c, cell) in row.iter().enumerate() {
            let w = t.widths.get(c).copied().unwrap_or(100);
            let font = ("sans-serif", 14).into_font().color(&BLACK);
            area.draw(&Text::new(cell.clone(), (x + 6, y + 8), font))
                .map_err(err)?;
            x += w as i32;
        }
        area.draw(&line(y + ROW_H as i32)).map_err(err)?;
    }
    Ok(())
}

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The font is compiled in; if ab_glyph rejected it the PNGs would have no text,
        // which the report test catches.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

fn encode_png(rgb: &[u8], w: u32, h: u32) -> Result<Vec<u8>, PlotError> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header()?;
        writer.write_image_data(rgb)?;
        writer.finish()?;
    }
    Ok(out)
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    p: &Panel,
) -> Result<(), PlotError> {
    let (x, y) = (&p.x, &p.y);
    match (x.is_log(), y.is_log()) {
        (false, false) => draw_xy(area, p, x.min..x.max, y.min..y.max),
        (true, false) => draw_xy(area, p, (x.min..x.max).log_scale(), y.min..y.max),
        (false, true) => draw_xy(area, p, x.min..x.max, (y.min..y.max).log_scale()),
        (true, true) => draw_xy(
            area,
            p,
            (x.min..x.max).log_scale(),
            (y.min..y.max).log_scale(),
        ),
    }
}

/// Tick label text: short, no trailing zeros.
fn tick(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if !(1e-3..1e5).contains(&a) {
        let e = a.log10().floor();
        let m = v / 10f64.powf(e);
        if (m - m.round()).abs() < 1e-9 && m.round().abs() == 1.0 {
            format!("{}1e{}", if v < 0.0 { "-" } else { "" }, e as i32)
        } else {
            format!("{m:.1}e{}", e as i32)
        }
    } else if a >= 100.0 || (v - v.round()).abs() < 1e-9 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        trim(format!("{v:.2}"))
    } else {
        trim(format!("{v:.4}"))
    }
}

/// Tick label on a log axis: only 1, 2 and 5 times a power of ten, so labels never crowd.
fn log_tick(v: f64) -> String {
    if v <= 0.0 {
        return String::new();
    }
    let m = v / 10f64.powf(v.log10().floor());
    if [1.0, 2.0, 5.0, 10.0].iter().any(|k| (m - k).abs() < 1e-6) {
        tick(v)
    } else {
        String::new()
    }
}

/// Tick label on a [`Scale::Pow2`] axis: 2^v at whole v, else nothing.
fn pow2_tick(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 && (0.0..63.0).contains(&v.round()) {
        (1u64 << (v.round() as u32)).to_string()
    } else {
        String::new()
    }
}

fn trim(s: String) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

fn percent(v: f64) -> String {
    trim(format!("{:.1}", v * 100.0)) + "%"
}

fn draw_xy<DB, X, Y>(area: &DrawingArea<DB, Shift>, p: &Panel, x: X, y: Y) -> Result<(), PlotError>
where
    DB: DrawingBackend,
    X: AsRangedCoord<Value = f64>,
    Y: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let err = drawing::<DrawingAreaErrorKind<DB::ErrorType>>("axes and series");
    let mut chart = ChartBuilder::on(area)
        .caption(&p.title, ("sans-serif", 18).into_font())
        .margin(12)
        .margin_right(22)
        .x_label_area_size(48)
        .y_label_area_size(68)
        .build_cartesian_2d(x, y)
        .map_err(err)?;
    let fx = |v: &f64| p.x.tick_label(*v);
    let fy = |v: &f64| p.y.tick_label(*v);
    chart
        .configure_mesh()
        .x_desc(&p.x.label)
        .y_desc(&p.y.label)
        .axis_desc_style(("sans-serif", 15))
        .label_style(("sans-serif", 13))
        .x_label_formatter(&fx)
        .y_label_formatter(&fy)
        .max_light_lines(2)
        .light_line_style(RGBColor(238, 238, 238))
        .bold_line_style(RGBColor(215, 215, 215))
        .draw()
        .map_err(err)?;
    let (x0, x1) = (p.x.min, p.x.max);
    let (y0, y1) = (p.y.min, p.y.max);
    let inside = |&(a, b): &(f64, f64)| {
        a.is_finite() && b.is_finite() && a >= x0 && a <= x1 && b >= y0 && b <= y1
    };
    for s in &p.series {
        let color = PALETTE[s.color % PALETTE.len()];
        let pts: Vec<(f64, f64)> = s.points.iter().copied().filter(inside).collect();
        let line = color.stroke_width(2);
        let anno = match s.style {
            Style::Dashed => chart
                .draw_series(DashedLineSeries::new(pts.clone(), 8, 5, line))
                .map_err(err)?,
            Style::Line | Style::LineMarkers => chart
                .draw_series(LineSeries::new(pts.clone(), line))
                .map_err(err)?,
            Style::Markers => chart
                .draw_series(pts.iter().map(|&q| Circle::new(q, 4, color.filled())))
                .map_err(err)?,
        };
        let legend_dashed = s.style == Style::Dashed;
        // Both legend glyphs are two strokes, so the closure has one concrete type.
        let (first, second, marker) = if legend_dashed {
            ((0, 8), (13, 20), 2)
        } else {
            ((0, 20), (8, 12), 7)
        };
        anno.label(s.name.clone()).legend(move |(lx, ly)| {
            EmptyElement::at((lx, ly))
                + PathElement::new(vec![(first.0, 0), (first.1, 0)], color.stroke_width(2))
                + PathElement::new(
                    vec![(second.0, 0), (second.1, 0)],
                    color.stroke_width(marker),
                )
        });
        if s.style == Style::LineMarkers {
            chart
                .draw_series(pts.iter().map(|&q| Circle::new(q, 3, color.filled())))
                .map_err(err)?;
        }
    }
    if !p.series.is_empty() {
        let pos = match p.legend {
            Legend::UpperLeft => SeriesLabelPosition::UpperLeft,
            Legend::UpperRight => SeriesLabelPosition::UpperRight,
            Legend::LowerLeft => SeriesLabelPosition::LowerLeft,
            Legend::LowerRight => SeriesLabelPosition::LowerRight,
        };
        chart
            .configure_series_labels()
            .position(pos)
            .label_font(("sans-serif", 13))
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(160, 160, 160))
            .margin(8)
            .draw()
            .map_err(err)?;
    }
    if let Some(note) = &p.note {
        // Pixel position inside the panel, just below the caption, right of the y labels.
        area.draw(&Text::new(
            note.clone(),
            (90, 44),
            ("sans-serif", 13).into_font().color(&RGBColor(170, 30, 30)),
        ))
        .map_err(err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_short() {
        assert_eq!(tick(0.0), "0");
        assert_eq!(tick(1024.0), "1024");
        assert_eq!(tick(100000.0), "1e5");
        assert_eq!(tick(0.25), "0.25");
        assert_eq!(tick(2.5), "2.5");
        assert_eq!(percent(0.995), "99.5%");
        assert_eq!(log_tick(500.0), "500");
        assert_eq!(log_tick(600.0), "");
        assert_eq!(log_tick(1e-5), "1e-5");
        assert_eq!(pow2_tick(10.0), "1024");
        assert_eq!(pow2_tick(7.5), "");
    }

    #[test]
    fn a_figure_renders_to_svg_and_png() {
        let mut p = Panel::new("t", "x", "y", Axis::log(1.0, 100.0), Axis::lin(0.0, 1.0));
        p.series.push(Series::new(
            "s",
            0,
            Style::LineMarkers,
            vec![(1.0, 0.1), (10.0, 0.5), (100.0, 0.9)],
        ));
        let f = Figure {
            id: "t",
            title: "title".into(),
            caption: String::new(),
            panels: vec![p],
            columns: 1,
            panel_size: PANEL,
            table: None,
        };
        let svg = f.svg().unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("title"), "{svg}");
        let png = f.png().unwrap();
        assert_eq!(&png[1..4], b"PNG");
    }
}
