//! Top-down SVG rendering of a world: lanes, lights, vehicles, obstacles, the ego's driven path
//! and its planned waypoints.

use crate::geom::{OrientedBox, Vec2};
use crate::traffic::LightState;
use crate::world::World;
use std::fmt::Write;

/// The ego's driven path over an episode, collected by the caller step by step.
#[derive(Clone, Debug, Default)]
pub struct Trail {
    pub points: Vec<Vec2>,
}

impl Trail {
    pub fn record(&mut self, w: &World) {
        self.points.push(w.ego.center(&w.cfg.vehicle));
    }
}

fn poly(out: &mut String, pts: impl Iterator<Item = Vec2>, style: &str) {
    out.push_str("<polyline points=\"");
    for p in pts {
        let _ = write!(out, "{:.2},{:.2} ", p.x, -p.y);
    }
    let _ = writeln!(out, "\" {style}/>");
}

fn rect(out: &mut String, b: &OrientedBox, fill: &str) {
    let c = b.corners();
    let _ = writeln!(
        out,
        "<polygon points=\"{:.2},{:.2} {:.2},{:.2} {:.2},{:.2} {:.2},{:.2}\" fill=\"{fill}\" stroke=\"#222\" stroke-width=\"0.15\"/>",
        c[0].x, -c[0].y, c[1].x, -c[1].y, c[2].x, -c[2].y, c[3].x, -c[3].y
    );
}

/// Renders the current state of `w` with the driven `trail` to an SVG document. The view is
/// the bounding box of the trail and the ego plus `margin` metres, or the whole map if
/// `whole_map`.
pub fn render_svg(w: &World, trail: &Trail, title: &str, whole_map: bool) -> String {
    let vp = &w.cfg.vehicle;
    let ego_c = w.ego.center(vp);
    let mut lo = ego_c;
    let mut hi = ego_c;
    let mut grow = |p: Vec2| {
        lo = Vec2::new(lo.x.min(p.x), lo.y.min(p.y));
        hi = Vec2::new(hi.x.max(p.x), hi.y.max(p.y));
    };
    if whole_map {
        for lane in &w.map.lanes {
            w.map.lines.points(lane.line).iter().for_each(|&p| grow(p));
        }
    } else {
        trail.points.iter().for_each(|&p| grow(p));
    }
    let margin = 25.0;
    let (x0, y0) = (lo.x - margin, -(hi.y + margin));
    let (wd, ht) = (hi.x - lo.x + 2.0 * margin, hi.y - lo.y + 2.0 * margin);
    let mut s = String::with_capacity(64 * 1024);
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"{x0:.1} {y0:.1} {wd:.1} {ht:.1}\" width=\"{:.0}\" height=\"{:.0}\">",
        (wd * 4.0).min(1200.0),
        (wd * 4.0).min(1200.0) * ht / wd
    );
    let _ = writeln!(
        s,
        "<rect x=\"{x0:.1}\" y=\"{y0:.1}\" width=\"{wd:.1}\" height=\"{ht:.1}\" fill=\"#6a8f5a\"/>"
    );
    // Lane surfaces, then centrelines.
    for lane in &w.map.lanes {
        let style = format!(
            "fill=\"none\" stroke=\"#555\" stroke-width=\"{:.2}\" stroke-linejoin=\"round\"",
            lane.width
        );
        poly(
            &mut s,
            w.map.lines.points(lane.line).iter().copied(),
            &style,
        );
    }
    for lane in &w.map.lanes {
        poly(
            &mut s,
            w.map.lines.points(lane.line).iter().copied(),
            "fill=\"none\" stroke=\"#ddd\" stroke-width=\"0.12\" stroke-dasharray=\"1.5 1.5\"",
        );
    }
    // Route.
    poly(
        &mut s,
        w.map
            .lines
            .points(w.map.paths[w.route].line)
            .iter()
            .copied(),
        "fill=\"none\" stroke=\"#4aa3ff\" stroke-width=\"0.5\" stroke-opacity=\"0.5\"",
    );
    // Lights.
    let t = w.time();
    for l in &w.lights {
        let colour = match l.state(t) {
            LightState::Green => "#2ecc40",
            LightState::Yellow => "#ffdc00",
            LightState::Red => "#ff4136",
        };
        let a = l.pos + l.heading.perp() * 1.75;
        let b = l.pos - l.heading.perp() * 1.75;
        let _ = writeln!(
            s,
            "<line x1=\"{:.2}\" y1=\"{:.2}\" x2=\"{:.2}\" y2=\"{:.2}\" stroke=\"{colour}\" stroke-width=\"0.6\"/>",
            a.x, -a.y, b.x, -b.y
        );
    }
    for b in &w.statics {
        rect(&mut s, b, "#8b5a2b");
    }
    for a in w.agents.iter().filter(|a| a.active) {
        let b = OrientedBox {
            center: a.pos,
            heading: a.heading,
            half_length: 0.5 * a.length,
            half_width: 0.5 * a.width,
        };
        rect(&mut s, &b, "#e8e8e8");
    }
    // Driven path, plan, ego.
    poly(
        &mut s,
        trail.points.iter().copied(),
        "fill=\"none\" stroke=\"#ff851b\" stroke-width=\"0.35\"",
    );
    let heading = Vec2::from_angle(w.ego.yaw);
    for wp in &w.last_plan {
        let p = Vec2::new(wp[0], wp[1]).from_frame(ego_c, heading);
        let _ = writeln!(
            s,
            "<circle cx=\"{:.2}\" cy=\"{:.2}\" r=\"0.3\" fill=\"#b10dc9\"/>",
            p.x, -p.y
        );
    }
    rect(&mut s, &w.ego_box(), "#0074d9");
    let _ = writeln!(
        s,
        "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"{:.1}\" fill=\"white\" font-family=\"sans-serif\">{}</text>",
        x0 + 2.0,
        y0 + 0.06 * ht,
        0.04 * ht.min(wd),
        xml_escape(title)
    );
    s.push_str("</svg>\n");
    s
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
