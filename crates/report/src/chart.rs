//! Charts as inline SVG, drawn by plotters' SVG backend (text is left to the browser's
//! `sans-serif`; no font files are read or embedded).
//!
//! A chart is a grid of [`Panel`]s: lines, points, markers and vertical rules on linear
//! axes. Log-scaled quantities (learning rate, batch size) are drawn as their logarithm with
//! tick labels put back in the original unit ([`Ticks::Pow10`]).

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::error::{Error, Result};

/// How an axis labels its ticks.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Ticks {
    /// The value, with this many decimals.
    Plain(usize),
    /// Short numbers (1200 → 1.2k): the x axes' default.
    Short,
    /// The value is log10 of the quantity: labelled 10^v.
    Pow10,
    /// The value is log2 of the quantity: labelled 2^v where v is an integer.
    Pow2,
}

impl Ticks {
    fn label(self, v: f64) -> String {
        match self {
            Ticks::Plain(d) => format!("{v:.d$}"),
            Ticks::Short => short_number(v),
            Ticks::Pow10 => format!("{:.0e}", 10f64.powf(v)),
            // Only at powers of two: 2^4.5 = 23 says nothing of a batch size.
            Ticks::Pow2 if (v - v.round()).abs() < 1e-6 => format!("{:.0}", 2f64.powf(v.round())),
            Ticks::Pow2 => String::new(),
        }
    }
}

/// One line (or set of points) of a panel.
#[derive(Debug, Clone)]
pub(crate) struct Series {
    pub label: String,
    pub color: RGBColor,
    pub points: Vec<(f64, f64)>,
    /// Drawn as a staircase (the value holds until the next point).
    pub step: bool,
    /// Drawn as points, not a line.
    pub dots: bool,
}

impl Series {
    pub(crate) fn line(label: impl Into<String>, color: RGBColor, points: Vec<(f64, f64)>) -> Series {
        Series { label: label.into(), color, points, step: false, dots: false }
    }

    pub(crate) fn steps(label: impl Into<String>, color: RGBColor, points: Vec<(f64, f64)>) -> Series {
        Series { step: true, ..Series::line(label, color, points) }
    }

    pub(crate) fn dots(label: impl Into<String>, color: RGBColor, points: Vec<(f64, f64)>) -> Series {
        Series { dots: true, ..Series::line(label, color, points) }
    }
}

/// One plotting area.
#[derive(Debug, Clone)]
pub(crate) struct Panel {
    pub title: String,
    pub x_desc: String,
    pub y_desc: String,
    pub x_ticks: Ticks,
    pub y_ticks: Ticks,
    pub series: Vec<Series>,
    /// Red triangles (anomalies), at these points.
    pub markers: Vec<(f64, f64)>,
    /// Vertical red rules (rollbacks), at these x.
    pub rules: Vec<f64>,
    /// A highlighted polyline with large rings (the Pareto front).
    pub front: Vec<(f64, f64)>,
    pub legend: bool,
}

impl Panel {
    pub(crate) fn new(title: impl Into<String>, x_desc: impl Into<String>, y_desc: impl Into<String>) -> Panel {
        Panel {
            title: title.into(),
            x_desc: x_desc.into(),
            y_desc: y_desc.into(),
            x_ticks: Ticks::Short,
            y_ticks: Ticks::Plain(2),
            series: Vec::new(),
            markers: Vec::new(),
            rules: Vec::new(),
            front: Vec::new(),
            legend: true,
        }
    }

    fn points(&self) -> impl Iterator<Item = (f64, f64)> + '_ {
        self.series
            .iter()
            .flat_map(|s| s.points.iter().copied())
            .chain(self.markers.iter().copied())
            .chain(self.front.iter().copied())
            .filter(|p| p.0.is_finite() && p.1.is_finite())
    }
}

/// Colours that stay apart on white, for trials and strategies.
pub(crate) const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
    RGBColor(127, 127, 127),
];

/// The colour of a strategy, the same in every chart.
pub(crate) fn strategy_color(strategy: &str) -> RGBColor {
    match strategy {
        "fixed" => PALETTE[7],
        "random" => PALETTE[1],
        "asha" => PALETTE[2],
        "pbt" => PALETTE[3],
        "pb2" => PALETTE[4],
        "rl" => PALETTE[0],
        "rl-no-width" => PALETTE[6],
        "tpe" => PALETTE[5],
        "tpe-multivariate" => RGBColor(188, 189, 34),
        _ => PALETTE[4],
    }
}

const ANOMALY: RGBColor = RGBColor(214, 39, 40);

/// Draws `panels` in a grid of `rows` × `cols` into an SVG of `size` pixels.
pub(crate) fn render(
    chart: &'static str,
    size: (u32, u32),
    rows: usize,
    cols: usize,
    panels: &[Panel],
) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        let fail = |e: &dyn std::fmt::Display| Error::Chart { chart, why: e.to_string() };
        root.fill(&WHITE).map_err(|e| fail(&e))?;
        for (area, panel) in root.split_evenly((rows, cols)).iter().zip(panels) {
            draw_panel(area, panel).map_err(|e| fail(&e))?;
        }
        root.present().map_err(|e| fail(&e))?;
    }
    Ok(svg)
}

type DrawResult = std::result::Result<(), Box<dyn std::error::Error>>;

fn draw_panel(area: &DrawingArea<SVGBackend<'_>, Shift>, panel: &Panel) -> DrawResult {
    let (mut x0, mut x1, mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY);
    for (x, y) in panel.points() {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    for &x in &panel.rules {
        (x0, x1) = (x0.min(x), x1.max(x));
    }
    let mut chart = ChartBuilder::on(area);
    chart.caption(&panel.title, ("sans-serif", 15)).margin(8).x_label_area_size(34).y_label_area_size(58);
    if !x0.is_finite() {
        // Nothing to draw yet (a study that has just started).
        let mut chart = chart.build_cartesian_2d(0f64..1f64, 0f64..1f64)?;
        chart.configure_mesh().disable_mesh().x_labels(0).y_labels(0).draw()?;
        chart.draw_series(std::iter::once(Text::new(
            "no data yet",
            (0.4, 0.5),
            ("sans-serif", 14).into_font().color(&BLACK.mix(0.6)),
        )))?;
        return Ok(());
    }
    if x1 <= x0 {
        (x0, x1) = (x0 - 1.0, x1 + 1.0);
    } else if panel.series.iter().any(|s| s.dots) {
        // Dots on the first and last x drawn whole, not cut by the frame.
        let pad = (x1 - x0) * 0.03;
        (x0, x1) = (x0 - pad, x1 + pad);
    }
    let pad = if y1 > y0 { (y1 - y0) * 0.06 } else { y0.abs().max(1.0) * 0.05 };
    let (y0, y1) = (y0 - pad, y1 + pad);
    let mut chart = chart.build_cartesian_2d(x0..x1, y0..y1)?;
    let (x_ticks, ticks) = (panel.x_ticks, panel.y_ticks);
    chart
        .configure_mesh()
        .light_line_style(BLACK.mix(0.05))
        .bold_line_style(BLACK.mix(0.12))
        .x_desc(panel.x_desc.as_str())
        .y_desc(panel.y_desc.as_str())
        .x_labels(6)
        .y_labels(6)
        .x_label_formatter(&|v| x_ticks.label(*v))
        .y_label_formatter(&|v| ticks.label(*v))
        .label_style(("sans-serif", 11))
        .draw()?;
    for &x in &panel.rules {
        chart.draw_series(LineSeries::new([(x, y0), (x, y1)], ANOMALY.mix(0.7).stroke_width(1)))?;
    }
    let mut labelled = false;
    for s in &panel.series {
        let color = s.color;
        let drawn = if s.dots {
            chart.draw_series(s.points.iter().map(|&p| Circle::new(p, 3, color.mix(0.75).filled())))?
        } else {
            let points = if s.step { staircase(&s.points) } else { s.points.clone() };
            chart.draw_series(LineSeries::new(points, color.stroke_width(2)))?
        };
        if panel.legend && !s.label.is_empty() {
            labelled = true;
            drawn.label(s.label.as_str()).legend(move |(x, y)| Circle::new((x + 8, y), 4, color.filled()));
        }
    }
    if !panel.front.is_empty() {
        chart
            .draw_series(LineSeries::new(panel.front.iter().copied(), BLACK.stroke_width(1)))?
            .label("Pareto front")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLACK.stroke_width(1)));
        chart.draw_series(panel.front.iter().map(|&p| Circle::new(p, 6, BLACK.stroke_width(2))))?;
        labelled = true;
    }
    if !panel.markers.is_empty() {
        chart
            .draw_series(panel.markers.iter().map(|&p| TriangleMarker::new(p, 6, ANOMALY.filled())))?
            .label("anomaly")
            .legend(|(x, y)| TriangleMarker::new((x + 8, y), 5, ANOMALY.filled()));
        labelled = true;
    }
    if !panel.rules.is_empty() {
        // Legend entry only: the rules are drawn above.
        chart
            .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())?
            .label("rollback")
            .legend(|(x, y)| PathElement::new(vec![(x + 8, y - 6), (x + 8, y + 6)], ANOMALY.stroke_width(2)));
        labelled = true;
    }
    if labelled {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .label_font(("sans-serif", 11))
            .draw()?;
    }
    Ok(())
}

/// `(x, y)` points as a staircase: each value holds until the next point's x.
fn staircase(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(points.len() * 2);
    for (i, &p) in points.iter().enumerate() {
        if i > 0 {
            out.push((p.0, points[i - 1].1));
        }
        out.push(p);
    }
    out
}

/// Tick labels that stay short: 1200 → "1.2k".
fn short_number(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else if a >= 10.0 || v == v.trunc() {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// A confusion matrix as a heat map: row `t` (true class, top to bottom), column `p`
/// (predicted), shaded by the row's share, with the count written in each cell.
pub(crate) fn heat_map(title: &str, counts: &[u64], classes: usize, size: (u32, u32)) -> Result<String> {
    let fail = |e: &dyn std::fmt::Display| Error::Chart { chart: "confusion matrix", why: e.to_string() };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| fail(&e))?;
        draw_heat_map(&root, title, counts, classes).map_err(|e| fail(&e))?;
        root.present().map_err(|e| fail(&e))?;
    }
    Ok(svg)
}

fn draw_heat_map(area: &DrawingArea<SVGBackend<'_>, Shift>, title: &str, counts: &[u64], n: usize) -> DrawResult {
    // plotters' integer ranges include their end: 0..n-1 is n segments.
    let n_i = n.max(2) as i32;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 15))
        .margin(8)
        .x_label_area_size(34)
        .y_label_area_size(40)
        .build_cartesian_2d((0..n_i - 1).into_segmented(), (0..n_i - 1).into_segmented())?;
    let class = |v: &SegmentValue<i32>| match v {
        SegmentValue::CenterOf(i) => Some(*i),
        _ => None,
    };
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc("predicted class")
        .y_desc("true class")
        .x_labels(n)
        .y_labels(n)
        .x_label_formatter(&|v| class(v).map_or(String::new(), |i| i.to_string()))
        .y_label_formatter(&|v| class(v).map_or(String::new(), |i| (n_i - 1 - i).to_string()))
        .label_style(("sans-serif", 11))
        .draw()?;
    let base = RGBColor(31, 119, 180);
    let mut cells = Vec::with_capacity(n * n);
    let mut texts = Vec::with_capacity(n * n);
    for t in 0..n {
        let row = &counts[t * n..(t + 1) * n];
        let total = row.iter().sum::<u64>().max(1) as f64;
        for (p, &c) in row.iter().enumerate() {
            let share = c as f64 / total;
            let (x, y) = (p as i32, n_i - 1 - t as i32);
            cells.push(Rectangle::new(
                [
                    (SegmentValue::Exact(x), SegmentValue::Exact(y)),
                    (SegmentValue::Exact(x + 1), SegmentValue::Exact(y + 1)),
                ],
                base.mix(0.05 + 0.95 * share).filled(),
            ));
            let ink = if share > 0.5 { WHITE } else { BLACK };
            texts.push(Text::new(
                c.to_string(),
                (SegmentValue::CenterOf(x), SegmentValue::CenterOf(y)),
                ("sans-serif", 10).into_font().color(&ink).pos(plotters::style::text_anchor::Pos::new(
                    plotters::style::text_anchor::HPos::Center,
                    plotters::style::text_anchor::VPos::Center,
                )),
            ));
        }
    }
    chart.draw_series(cells)?;
    chart.draw_series(texts)?;
    Ok(())
}

/// At most `max` points of `points`, evenly spaced, keeping the first and the last, and
/// every point whose value differs from the one before (a change of batch size or width
/// stays where it happened).
pub(crate) fn thin(points: &[(f64, f64)], max: usize) -> Vec<(f64, f64)> {
    if points.len() <= max || max < 2 {
        return points.to_vec();
    }
    let every = points.len().div_ceil(max);
    let keep_changes = changes_rarely(points);
    points
        .iter()
        .enumerate()
        .filter(|&(i, p)| i % every == 0 || i + 1 == points.len() || (keep_changes && i > 0 && points[i - 1].1 != p.1))
        .map(|(_, &p)| p)
        .collect()
}

/// True when fewer than one point in ten changes value (a staircase, not a noisy curve).
fn changes_rarely(points: &[(f64, f64)]) -> bool {
    let changes = points.windows(2).filter(|w| w[0].1 != w[1].1).count();
    changes * 10 < points.len()
}

/// Means of `max` equal buckets of `points` (x of each bucket's first point): a noisy curve
/// (the training loss) drawn with few points and less noise.
pub(crate) fn bucket_means(points: &[(f64, f64)], max: usize) -> Vec<(f64, f64)> {
    if points.len() <= max || max == 0 {
        return points.to_vec();
    }
    let size = points.len().div_ceil(max);
    points
        .chunks(size)
        .map(|c| {
            let finite: Vec<f64> = c.iter().map(|p| p.1).filter(|v| v.is_finite()).collect();
            let mean = if finite.is_empty() { f64::NAN } else { finite.iter().sum::<f64>() / finite.len() as f64 };
            (c[0].0, mean)
        })
        .filter(|p| p.1.is_finite())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thin_keeps_ends_and_changes() {
        let points: Vec<(f64, f64)> = (0..1000).map(|i| (i as f64, if i < 437 { 128.0 } else { 64.0 })).collect();
        let out = thin(&points, 50);
        assert!(out.len() <= 52, "{}", out.len());
        assert_eq!(out.first(), points.first());
        assert_eq!(out.last(), points.last());
        assert!(out.contains(&(437.0, 64.0)), "the change at step 437 is kept");
    }

    #[test]
    fn bucket_means_average_and_skip_non_finite() {
        let points = [(0.0, 1.0), (1.0, 3.0), (2.0, f64::NAN), (3.0, 5.0), (4.0, f64::NAN), (5.0, f64::NAN)];
        assert_eq!(bucket_means(&points, 3), [(0.0, 2.0), (2.0, 5.0)]);
    }

    #[test]
    fn staircase_holds_values() {
        assert_eq!(staircase(&[(0.0, 1.0), (2.0, 3.0)]), [(0.0, 1.0), (2.0, 1.0), (2.0, 3.0)]);
    }

    #[test]
    fn a_chart_is_an_svg_with_its_text() {
        let mut panel = Panel::new("best so far", "seconds", "F1");
        panel.series.push(Series::steps("rl", PALETTE[0], vec![(0.0, 0.5), (10.0, 0.8)]));
        panel.markers.push((5.0, 0.6));
        panel.rules.push(7.0);
        let svg = render("test", (400, 300), 1, 1, &[panel]).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..40]);
        for text in ["best so far", "seconds", "rl", "anomaly", "rollback"] {
            assert!(svg.contains(text), "{text} missing");
        }
        let empty = render("test", (400, 300), 1, 1, &[Panel::new("x", "y", "z")]).unwrap();
        assert!(empty.contains("no data yet"));
        let map = heat_map("confusion", &[5, 1, 2, 7], 2, (300, 300)).unwrap();
        assert_eq!(map.matches("<rect").count() - 1, 4, "one rect per cell besides the background");
    }
}
