//! Minimal SVG charts: a line chart (learning curves) and grouped bars with 95% intervals.
//!
//! Written here rather than with `plotters`: its SVG backend needs a font stack for text
//! layout (system fonts or a bundled TTF), which a headless CI machine may not have, and these
//! two chart types are about a hundred lines. The output is plain SVG that any browser renders.

use std::fmt::Write;

const PALETTE: [&str; 4] = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"];
const W: f64 = 720.0;
const H: f64 = 360.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn header(title: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {W} {H}\" width=\"{W}\" height=\"{H}\" font-family=\"sans-serif\" font-size=\"12\">"
    );
    let _ = writeln!(s, "<rect width=\"{W}\" height=\"{H}\" fill=\"white\"/>");
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">{}</text>",
        W / 2.0,
        esc(title)
    );
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

fn axes(
    s: &mut String,
    (x0, x1): (f64, f64),
    (y0, y1): (f64, f64),
    (xlabel, ylabel): (&str, &str),
    x_ticks: bool,
) {
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let _ = writeln!(s, "<rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" stroke=\"#333\"/>");
    let step = tick_step(y1 - y0);
    let mut v = (y0 / step).ceil() * step;
    while v <= y1 + 1e-9 {
        let y = TOP + ph * (1.0 - (v - y0) / (y1 - y0));
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
        let step = tick_step(x1 - x0);
        let mut v = (x0 / step).ceil() * step;
        while v <= x1 + 1e-9 {
            let x = LEFT + pw * (v - x0) / (x1 - x0);
            let _ = writeln!(
                s,
                "<text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
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
        H - 12.0,
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

fn fmt_num(v: f64) -> String {
    if v.abs() >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v.abs() >= 1e3 {
        format!("{:.0}k", v / 1e3)
    } else if v.fract().abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// A named series of (x, y) points.
pub struct Series<'a> {
    pub name: &'a str,
    pub points: Vec<(f64, f64)>,
}

/// Line chart of several series sharing axes. Non-finite points are skipped.
pub fn line_chart(title: &str, xlabel: &str, ylabel: &str, series: &[Series]) -> String {
    let pts = series
        .iter()
        .flat_map(|s| s.points.iter())
        .filter(|p| p.0.is_finite() && p.1.is_finite());
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
    if !x0.is_finite() {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if x1 - x0 < 1e-9 {
        x1 = x0 + 1.0;
    }
    let pad = ((y1 - y0) * 0.08).max(1e-6);
    y0 -= pad;
    y1 += pad;
    let mut s = header(title);
    axes(&mut s, (x0, x1), (y0, y1), (xlabel, ylabel), true);
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    for (k, ser) in series.iter().enumerate() {
        let colour = PALETTE[k % PALETTE.len()];
        s.push_str("<polyline fill=\"none\" stroke-width=\"2\" stroke=\"");
        s.push_str(colour);
        s.push_str("\" points=\"");
        for &(x, y) in ser
            .points
            .iter()
            .filter(|p| p.0.is_finite() && p.1.is_finite())
        {
            let _ = write!(
                s,
                "{:.1},{:.1} ",
                LEFT + pw * (x - x0) / (x1 - x0),
                TOP + ph * (1.0 - (y - y0) / (y1 - y0))
            );
        }
        s.push_str("\"/>\n");
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"{colour}\">{}</text>",
            LEFT + 10.0,
            TOP + 16.0 + 15.0 * k as f64,
            esc(ser.name)
        );
    }
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
    axes(&mut s, (0.0, 1.0), (0.0, y_max), ("", ylabel), false);
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
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
