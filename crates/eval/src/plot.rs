//! Minimal SVG charts: line charts (learning curves, speed and acceleration) with faint raw
//! series, labelled reference lines and vertical markers; grouped bars with 95% intervals;
//! a difference chart (one interval per row against zero and a threshold).
//!
//! Written here rather than with `plotters`: its SVG backend needs a font stack for text
//! layout (system fonts or a bundled TTF), which a headless CI machine may not have, and these
//! chart types are a few hundred lines. The output is plain SVG that any browser renders.
//! Elements carry a `class` (`line`, `raw`, `reference`, `marker`, `interval`) so tests can
//! find them.

use std::fmt::Write;

/// Colours of series, in order (policies use the first three: expert, SFT, RL).
pub const PALETTE: [&str; 4] = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"];
const W: f64 = 720.0;
const H: f64 = 360.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 60.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn open_svg(s: &mut String, width: f64, height: f64) {
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {width} {height}\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">"
    );
    let _ = writeln!(
        s,
        "<rect width=\"{width}\" height=\"{height}\" fill=\"white\"/>"
    );
}

fn title(s: &mut String, width: f64, text: &str) {
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">{}</text>",
        width / 2.0,
        esc(text)
    );
}

fn header(text: &str) -> String {
    let mut s = String::new();
    open_svg(&mut s, W, H);
    title(&mut s, W, text);
    s
}

/// "Nice" tick step for a range.
fn tick_step(range: f64) -> f64 {
    let raw = range / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    mag * if f < 1.5 {
        1.0
    } else if f < 3.0 {
        2.0
    } else if f < 7.0 {
        5.0
    } else {
        10.0
    }
}

/// The plot box of a chart and the data ranges mapped onto it.
#[derive(Clone, Copy, Debug)]
struct Frame {
    width: f64,
    height: f64,
    x: (f64, f64),
    y: (f64, f64),
}

impl Frame {
    fn plot_width(&self) -> f64 {
        self.width - LEFT - RIGHT
    }

    fn plot_height(&self) -> f64 {
        self.height - TOP - BOTTOM
    }

    fn px(&self, x: f64) -> f64 {
        LEFT + self.plot_width() * (x - self.x.0) / (self.x.1 - self.x.0)
    }

    fn py(&self, y: f64) -> f64 {
        TOP + self.plot_height() * (1.0 - (y - self.y.0) / (self.y.1 - self.y.0))
    }
}

fn axes(s: &mut String, frame: &Frame, (xlabel, ylabel): (&str, &str), x_ticks: bool) {
    let (pw, ph) = (frame.plot_width(), frame.plot_height());
    let (y0, y1) = frame.y;
    let _ = writeln!(s, "<rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" stroke=\"#333\"/>");
    let step = tick_step(y1 - y0);
    let mut v = (y0 / step).ceil() * step;
    while v <= y1 + 1e-9 {
        let y = frame.py(v);
        let _ = writeln!(
            s,
            "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>",
            LEFT + pw
        );
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            LEFT - 5.0,
            y + 4.0,
            fmt_num(v)
        );
        v += step;
    }
    if x_ticks {
        let (x0, x1) = frame.x;
        let step = tick_step(x1 - x0);
        let mut v = (x0 / step).ceil() * step;
        while v <= x1 + 1e-9 {
            let _ = writeln!(
                s,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                frame.px(v),
                TOP + ph + 16.0,
                fmt_num(v)
            );
            v += step;
        }
    }
    let _ = writeln!(
        s,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
        LEFT + pw / 2.0,
        frame.height - 12.0,
        esc(xlabel)
    );
    let _ = writeln!(
        s,
        "<text x=\"14\" y=\"{:.1}\" text-anchor=\"middle\" transform=\"rotate(-90 14 {:.1})\">{}</text>",
        TOP + ph / 2.0,
        TOP + ph / 2.0,
        esc(ylabel)
    );
}

/// `x` with its sign and one decimal, rounding to zero shown as `+0.0` (never `-0.0`).
pub fn signed(x: f64) -> String {
    if !x.is_finite() {
        return "-".into();
    }
    let rounded = (10.0 * x).round() / 10.0 + 0.0;
    format!("{rounded:+.1}")
}

/// A tick label: thousands as `k`, millions as `M`, with the decimals the value needs.
fn fmt_num(v: f64) -> String {
    let short = |x: f64| {
        if (x - x.round()).abs() < 1e-9 {
            format!("{:.0}", x.round() + 0.0)
        } else if (10.0 * x - (10.0 * x).round()).abs() < 1e-6 {
            format!("{x:.1}")
        } else {
            format!("{x:.2}")
        }
    };
    if v.abs() >= 1e6 {
        format!("{}M", short(v / 1e6))
    } else if v.abs() >= 1e3 {
        format!("{}k", short(v / 1e3))
    } else {
        short(v)
    }
}

/// A named series of (x, y) points.
pub struct Series<'a> {
    pub name: &'a str,
    pub points: Vec<(f64, f64)>,
}

/// Line chart of several series sharing axes. Non-finite points are skipped.
pub fn line_chart(title: &str, xlabel: &str, ylabel: &str, series: &[Series]) -> String {
    LineChart {
        title: title.into(),
        x_label: xlabel.into(),
        y_label: ylabel.into(),
        lines: series
            .iter()
            .enumerate()
            .map(|(k, ser)| Line {
                name: Some(ser.name.into()),
                colour: PALETTE[k % PALETTE.len()],
                faint: false,
                points: ser.points.clone(),
            })
            .collect(),
        ..LineChart::default()
    }
    .to_svg()
}

/// One polyline of a [`LineChart`].
#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    /// The legend entry; `None` keeps it out of the legend (a raw series behind its smoothed
    /// one).
    pub name: Option<String>,
    pub colour: &'static str,
    /// Drawn thin and transparent, behind the others.
    pub faint: bool,
    pub points: Vec<(f64, f64)>,
}

impl Line {
    /// The raw series (faint, no legend entry) and its exponential moving average (bold,
    /// named), the way TensorBoard shows noisy curves.
    pub fn smoothed_with_raw(name: &str, colour: &'static str, raw: Vec<(f64, f64)>) -> Vec<Line> {
        let smoothed = ema(&raw, smoothing_weight(raw.len()));
        vec![
            Line {
                name: None,
                colour,
                faint: true,
                points: raw,
            },
            Line {
                name: Some(format!("{name} (smoothed)")),
                colour,
                faint: false,
                points: smoothed,
            },
        ]
    }
}

/// The EMA weight for `n` points: an effective span of 1/40 of the points (no smoothing below
/// 40 points).
pub fn smoothing_weight(n: usize) -> f64 {
    let span = (n as f64 / 40.0).max(1.0);
    1.0 - 2.0 / (span + 1.0)
}

/// Bias-corrected exponential moving average of the y values (TensorBoard's smoothing):
/// `m_k = w m_(k-1) + (1 - w) y_k`, divided by `1 - w^k` so the first points are not pulled
/// towards zero. Non-finite y values are skipped.
pub fn ema(points: &[(f64, f64)], weight: f64) -> Vec<(f64, f64)> {
    let (mut acc, mut norm) = (0.0, 0.0);
    points
        .iter()
        .filter(|p| p.1.is_finite())
        .map(|&(x, y)| {
            acc = weight * acc + (1.0 - weight) * y;
            norm = weight * norm + (1.0 - weight);
            (x, acc / norm)
        })
        .collect()
}

/// A labelled horizontal line at `y` (a level to compare against).
#[derive(Clone, Debug, PartialEq)]
pub struct Reference {
    pub label: String,
    pub y: f64,
    pub colour: &'static str,
    pub dashed: bool,
}

/// A labelled vertical line at `x` (an event on the x axis).
#[derive(Clone, Debug, PartialEq)]
pub struct Marker {
    pub label: String,
    pub x: f64,
}

/// A line chart with faint raw series, reference lines and markers; the y range includes every
/// reference, the x range every marker.
#[derive(Clone, Debug, PartialEq)]
pub struct LineChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub lines: Vec<Line>,
    pub references: Vec<Reference>,
    pub markers: Vec<Marker>,
    pub width: f64,
    pub height: f64,
}

impl Default for LineChart {
    fn default() -> Self {
        LineChart {
            title: String::new(),
            x_label: String::new(),
            y_label: String::new(),
            lines: Vec::new(),
            references: Vec::new(),
            markers: Vec::new(),
            width: W,
            height: H,
        }
    }
}

impl LineChart {
    /// The chart as a standalone SVG document.
    pub fn to_svg(&self) -> String {
        stack(std::slice::from_ref(self))
    }

    fn frame(&self) -> Frame {
        let finite = |p: &&(f64, f64)| p.0.is_finite() && p.1.is_finite();
        let pts = self
            .lines
            .iter()
            .flat_map(|l| l.points.iter())
            .filter(finite);
        let (mut x0, mut x1, mut y0, mut y1) = (
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::INFINITY,
            f64::NEG_INFINITY,
        );
        for &(x, y) in pts {
            x0 = x0.min(x);
            x1 = x1.max(x);
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
        for r in self.references.iter().filter(|r| r.y.is_finite()) {
            y0 = y0.min(r.y);
            y1 = y1.max(r.y);
        }
        for m in self.markers.iter().filter(|m| m.x.is_finite()) {
            x0 = x0.min(m.x);
            x1 = x1.max(m.x);
        }
        if !x0.is_finite() {
            (x0, x1) = (0.0, 1.0);
        }
        if !y0.is_finite() {
            (y0, y1) = (0.0, 1.0);
        }
        if x1 - x0 < 1e-9 {
            x1 = x0 + 1.0;
        }
        let pad = ((y1 - y0) * 0.08).max(1e-6);
        Frame {
            width: self.width,
            height: self.height,
            x: (x0, x1),
            y: (y0 - pad, y1 + pad),
        }
    }

    fn draw(&self, s: &mut String) {
        let frame = self.frame();
        title(s, self.width, &self.title);
        axes(s, &frame, (&self.x_label, &self.y_label), true);
        let (pw, ph) = (frame.plot_width(), frame.plot_height());
        let lines = self
            .lines
            .iter()
            .filter(|l| l.faint)
            .chain(self.lines.iter().filter(|l| !l.faint));
        for line in lines {
            let (class, style) = if line.faint {
                ("raw", "stroke-width=\"1\" stroke-opacity=\"0.3\"")
            } else {
                ("line", "stroke-width=\"2\"")
            };
            let _ = write!(
                s,
                "<polyline class=\"{class}\" data-name=\"{}\" fill=\"none\" {style} stroke=\"{}\" points=\"",
                esc(line.name.as_deref().unwrap_or("")),
                line.colour
            );
            for &(x, y) in line
                .points
                .iter()
                .filter(|p| p.0.is_finite() && p.1.is_finite())
            {
                let _ = write!(s, "{:.1},{:.1} ", frame.px(x), frame.py(y));
            }
            s.push_str("\"/>\n");
        }
        let mut label_ys: Vec<f64> = Vec::new();
        for r in self.references.iter().filter(|r| r.y.is_finite()) {
            let y = frame.py(r.y);
            // Labels of nearby levels are moved down until they no longer overlap.
            let mut label_y = y - 3.0;
            while label_ys.iter().any(|&u| (u - label_y).abs() < 11.0) {
                label_y += 11.0;
            }
            label_ys.push(label_y);
            let dash = if r.dashed {
                " stroke-dasharray=\"6 4\""
            } else {
                ""
            };
            let _ = writeln!(
                s,
                "<line class=\"reference\" data-value=\"{}\" x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"{}\" stroke-width=\"1.5\"{dash}/>",
                r.y,
                LEFT + pw,
                r.colour
            );
            let _ = writeln!(
                s,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" font-size=\"10\" fill=\"{}\">{}</text>",
                LEFT + pw - 4.0,
                label_y,
                r.colour,
                esc(&r.label)
            );
        }
        for m in self.markers.iter().filter(|m| m.x.is_finite()) {
            let x = frame.px(m.x);
            let _ = writeln!(
                s,
                "<line class=\"marker\" data-value=\"{}\" x1=\"{x:.1}\" y1=\"{TOP}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#555\" stroke-width=\"1.5\" stroke-dasharray=\"2 3\"/>",
                m.x,
                TOP + ph
            );
            let _ = writeln!(
                s,
                "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" fill=\"#555\">{}</text>",
                x + 3.0,
                TOP + 12.0,
                esc(&m.label)
            );
        }
        // The legend: one row between the title and the plot, clear of the lines.
        let mut x = LEFT;
        for line in self.lines.iter().filter(|l| l.name.is_some()) {
            let name = line.name.as_deref().unwrap_or("");
            let _ = writeln!(
                s,
                "<line x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"{}\" stroke-width=\"2\"/><text x=\"{:.1}\" y=\"{:.1}\" fill=\"{}\">{}</text>",
                TOP - 10.0,
                x + 16.0,
                TOP - 10.0,
                line.colour,
                x + 20.0,
                TOP - 6.0,
                line.colour,
                esc(name)
            );
            x += 20.0 + 6.5 * name.len() as f64 + 16.0;
        }
    }
}

/// Several line charts in one SVG document, one under the other (panels sharing a figure).
pub fn stack(charts: &[LineChart]) -> String {
    let width = charts.iter().map(|c| c.width).fold(0.0, f64::max);
    let height: f64 = charts.iter().map(|c| c.height).sum();
    let mut s = String::new();
    open_svg(&mut s, width, height);
    let mut y = 0.0;
    for c in charts {
        let _ = writeln!(s, "<g class=\"panel\" transform=\"translate(0 {y})\">");
        c.draw(&mut s);
        s.push_str("</g>\n");
        y += c.height;
    }
    s.push_str("</svg>\n");
    s
}

/// One row of a [`difference_chart`].
#[derive(Clone, Debug, PartialEq)]
pub struct Difference {
    pub label: String,
    pub estimate: crate::stats::Estimate,
    /// Drawn in red.
    pub flagged: bool,
}

/// One row per difference: its 95% interval and mean, against a solid zero line and a dashed
/// `threshold` line; flagged rows in red.
pub fn difference_chart(
    title_text: &str,
    x_label: &str,
    rows: &[Difference],
    threshold: f64,
) -> String {
    let row_h = 28.0;
    let height = TOP + BOTTOM + row_h * rows.len().max(1) as f64;
    let left = 110.0;
    let finite = |x: f64| x.is_finite().then_some(x);
    let (mut x0, mut x1) = (threshold.min(0.0), threshold.max(0.0));
    for r in rows {
        for v in [r.estimate.lo, r.estimate.hi, r.estimate.mean]
            .into_iter()
            .filter_map(finite)
        {
            x0 = x0.min(v);
            x1 = x1.max(v);
        }
    }
    let pad = ((x1 - x0) * 0.08).max(0.5);
    let (x0, x1) = (x0 - pad, x1 + pad);
    let right = 150.0;
    let pw = W - left - right;
    let px = |x: f64| left + pw * (x - x0) / (x1 - x0);
    let mut s = String::new();
    open_svg(&mut s, W, height);
    title(&mut s, W, title_text);
    let bottom = height - BOTTOM;
    let _ = writeln!(s, "<rect x=\"{left}\" y=\"{TOP}\" width=\"{pw}\" height=\"{:.1}\" fill=\"none\" stroke=\"#333\"/>", bottom - TOP);
    let step = tick_step(x1 - x0);
    let mut v = (x0 / step).ceil() * step;
    while v <= x1 + 1e-9 {
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            px(v),
            bottom + 16.0,
            fmt_num(v)
        );
        v += step;
    }
    let _ = writeln!(
        s,
        "<line class=\"zero\" x1=\"{0:.1}\" y1=\"{TOP}\" x2=\"{0:.1}\" y2=\"{bottom:.1}\" stroke=\"#333\"/>",
        px(0.0)
    );
    let _ = writeln!(
        s,
        "<line class=\"reference\" data-value=\"{threshold}\" x1=\"{0:.1}\" y1=\"{TOP}\" x2=\"{0:.1}\" y2=\"{bottom:.1}\" stroke=\"{1}\" stroke-dasharray=\"6 4\"/>",
        px(threshold),
        PALETTE[3]
    );
    let _ = writeln!(
        s,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" font-size=\"10\" fill=\"{}\">{threshold:+} point</text>",
        px(threshold) + 12.0,
        TOP - 4.0,
        PALETTE[3]
    );
    for (k, r) in rows.iter().enumerate() {
        let y = TOP + row_h * (k as f64 + 0.5);
        let colour = if r.flagged { PALETTE[3] } else { "#222" };
        let e = r.estimate;
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"{colour}\">{}</text>",
            left - 6.0,
            y + 4.0,
            esc(&r.label)
        );
        if let (Some(lo), Some(hi), Some(mean)) = (finite(e.lo), finite(e.hi), finite(e.mean)) {
            let _ = writeln!(
                s,
                "<line class=\"interval\" data-flagged=\"{}\" x1=\"{:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"{colour}\" stroke-width=\"2\"/>",
                r.flagged,
                px(lo),
                px(hi)
            );
            let _ = writeln!(
                s,
                "<circle cx=\"{:.1}\" cy=\"{y:.1}\" r=\"4\" fill=\"{colour}\"/>",
                px(mean)
            );
            let _ = writeln!(
                s,
                "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" fill=\"{colour}\">{} [{}, {}]</text>",
                left + pw + 6.0,
                y + 4.0,
                signed(mean),
                signed(lo),
                signed(hi)
            );
        }
    }
    let _ = writeln!(
        s,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
        left + pw / 2.0,
        height - 12.0,
        esc(x_label)
    );
    s.push_str("</svg>\n");
    s
}

/// One bar: value and its 95% interval.
#[derive(Clone, Copy, Debug)]
pub struct Bar {
    pub value: f64,
    pub lo: f64,
    pub hi: f64,
}

/// Grouped bar chart: `groups[g]` has one bar per entry of `names`, drawn with error bars.
pub fn grouped_bars(
    title: &str,
    ylabel: &str,
    names: &[&str],
    groups: &[(String, Vec<Bar>)],
    y_max: f64,
) -> String {
    let mut s = header(title);
    let frame = Frame {
        width: W,
        height: H,
        x: (0.0, 1.0),
        y: (0.0, y_max),
    };
    axes(&mut s, &frame, ("", ylabel), false);
    let (pw, ph) = (frame.plot_width(), frame.plot_height());
    let gw = pw / groups.len().max(1) as f64;
    let bw = gw * 0.8 / names.len().max(1) as f64;
    let y = |v: f64| TOP + ph * (1.0 - (v / y_max).clamp(0.0, 1.0));
    for (g, (label, bars)) in groups.iter().enumerate() {
        let gx = LEFT + g as f64 * gw + gw * 0.1;
        for (k, b) in bars.iter().enumerate() {
            let x = gx + k as f64 * bw;
            let colour = PALETTE[k % PALETTE.len()];
            let _ = writeln!(
                s,
                "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{colour}\"/>",
                y(b.value),
                bw * 0.9,
                (y(0.0) - y(b.value)).max(0.0)
            );
            let cx = x + bw * 0.45;
            // The value, so a zero bar reads as zero rather than missing.
            let _ =
                writeln!(
                s,
                "<text x=\"{cx:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"9\">{}</text>",
                y(b.value) - 3.0,
                if b.value.is_finite() { format!("{:.0}", b.value) } else { "-".into() }
            );
            let _ = writeln!(
                s,
                "<line x1=\"{cx:.1}\" y1=\"{:.1}\" x2=\"{cx:.1}\" y2=\"{:.1}\" stroke=\"#000\"/>",
                y(b.lo),
                y(b.hi)
            );
        }
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            LEFT + (g as f64 + 0.5) * gw,
            TOP + ph + 16.0,
            esc(label)
        );
    }
    // Legend in one row under the plot, clear of the bars.
    for (k, name) in names.iter().enumerate() {
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"{}\">{}</text>",
            LEFT + 90.0 * k as f64,
            H - 12.0,
            PALETTE[k % PALETTE.len()],
            esc(name)
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_chart_maps_extremes_to_the_plot_box() {
        let svg = line_chart(
            "t",
            "x",
            "y",
            &[Series {
                name: "a",
                points: vec![(0.0, 0.0), (10.0, 5.0), (f64::NAN, 1.0)],
            }],
        );
        let doc = roxmltree::Document::parse(&svg).unwrap();
        let pl = doc
            .descendants()
            .find(|n| n.has_tag_name("polyline"))
            .unwrap();
        let pts: Vec<(f64, f64)> = pl
            .attribute("points")
            .unwrap()
            .split_whitespace()
            .map(|p| {
                let (a, b) = p.split_once(',').unwrap();
                (a.parse().unwrap(), b.parse().unwrap())
            })
            .collect();
        // NaN skipped; x spans the plot width exactly; higher y is drawn higher (smaller svg y).
        assert_eq!(pts.len(), 2);
        assert!((pts[0].0 - LEFT).abs() < 0.1 && (pts[1].0 - (W - RIGHT)).abs() < 0.1);
        assert!(pts[1].1 < pts[0].1);
    }

    #[test]
    fn ema_is_bias_corrected_and_skips_non_finite_values() {
        let m = ema(&[(0.0, 1.0), (1.0, 3.0), (2.0, f64::NAN)], 0.5);
        // 0.5 * 1 / 0.5 = 1; (0.25 + 1.5) / 0.75 = 7/3; the NaN point is dropped.
        assert_eq!(m.len(), 2);
        assert_eq!(m[0], (0.0, 1.0));
        assert!((m[1].1 - 7.0 / 3.0).abs() < 1e-12);
        // A constant series stays constant from its first point (no pull towards zero).
        assert!(ema(&[(0.0, 5.0); 10], 0.9)
            .iter()
            .all(|p| (p.1 - 5.0).abs() < 1e-12));
        // A span of n/40 iterations: none below 40 points, weight 1 - 2/21 at 800.
        assert_eq!(smoothing_weight(6), 0.0);
        assert!((smoothing_weight(800) - (1.0 - 2.0 / 21.0)).abs() < 1e-12);
        assert_eq!(signed(-0.04), "+0.0");
        assert_eq!(signed(-1.06), "-1.1");
    }

    #[test]
    fn bars_have_heights_proportional_to_values() {
        let svg = grouped_bars(
            "t",
            "y",
            &["a", "b"],
            &[(
                "g".into(),
                vec![
                    Bar {
                        value: 50.0,
                        lo: 40.0,
                        hi: 60.0,
                    },
                    Bar {
                        value: 100.0,
                        lo: 90.0,
                        hi: 100.0,
                    },
                ],
            )],
            100.0,
        );
        let doc = roxmltree::Document::parse(&svg).unwrap();
        let h: Vec<f64> = doc
            .descendants()
            .filter(|n| {
                n.has_tag_name("rect")
                    && n.attribute("fill") != Some("white")
                    && n.attribute("fill") != Some("none")
            })
            .map(|n| n.attribute("height").unwrap().parse().unwrap())
            .collect();
        assert_eq!(h.len(), 2);
        assert!((h[1] / h[0] - 2.0).abs() < 0.01, "{h:?}");
    }
}
