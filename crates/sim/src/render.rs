//! Top-down SVG rendering of a world: lanes, lights, vehicles, obstacles, the ego's driven path
//! and its planned waypoints, the point where the episode failed, and a legend.
//!
//! A picture shows a [`Crop`] of the world at a fixed pixel width, so two pictures with the same
//! crop have the same scale and can be compared side by side (the report renders the SFT and
//! the refined planner on one scenario this way). The scene is drawn in world metres with y
//! flipped (`svg y = -world y`); [`scene`] writes it alone, for frames nested in a larger figure.

use crate::events::EndReason;
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

/// Pixel width of every picture: equal crops give equal scales.
pub const PICTURE_WIDTH: f32 = 900.0;
/// Metres around the driven path in [`Crop::Trail`].
pub const TRAIL_MARGIN: f32 = 25.0;

/// An axis-aligned rectangle of the world plane, metres.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bounds {
    pub min: Vec2,
    pub max: Vec2,
}

impl Bounds {
    /// The smallest rectangle holding every point (`None` for no points).
    pub fn around(points: impl IntoIterator<Item = Vec2>) -> Option<Bounds> {
        points.into_iter().fold(None, |b: Option<Bounds>, p| {
            Some(match b {
                None => Bounds { min: p, max: p },
                Some(b) => Bounds {
                    min: Vec2::new(b.min.x.min(p.x), b.min.y.min(p.y)),
                    max: Vec2::new(b.max.x.max(p.x), b.max.y.max(p.y)),
                },
            })
        })
    }

    /// The smallest rectangle holding both.
    pub fn union(self, other: Bounds) -> Bounds {
        Bounds {
            min: Vec2::new(self.min.x.min(other.min.x), self.min.y.min(other.min.y)),
            max: Vec2::new(self.max.x.max(other.max.x), self.max.y.max(other.max.y)),
        }
    }

    /// Grown by `margin` metres on every side.
    pub fn grown(self, margin: f32) -> Bounds {
        Bounds {
            min: Vec2::new(self.min.x - margin, self.min.y - margin),
            max: Vec2::new(self.max.x + margin, self.max.y + margin),
        }
    }

    /// Grown symmetrically along one side until `width / height = aspect` (never shrunk), so
    /// the frames of a filmstrip have one shape.
    pub fn with_aspect(self, aspect: f32) -> Bounds {
        let (w, h) = (self.width(), self.height());
        let c = Vec2::new(
            0.5 * (self.min.x + self.max.x),
            0.5 * (self.min.y + self.max.y),
        );
        let (w, h) = if w / h > aspect {
            (w, w / aspect)
        } else {
            (h * aspect, h)
        };
        Bounds {
            min: Vec2::new(c.x - 0.5 * w, c.y - 0.5 * h),
            max: Vec2::new(c.x + 0.5 * w, c.y + 0.5 * h),
        }
    }

    pub fn width(&self) -> f32 {
        self.max.x - self.min.x
    }

    pub fn height(&self) -> f32 {
        self.max.y - self.min.y
    }

    /// The SVG `viewBox` of this rectangle (y flipped), as [`scene`] draws the world.
    pub fn view_box(&self) -> String {
        format!(
            "{:.2} {:.2} {:.2} {:.2}",
            self.min.x,
            -self.max.y,
            self.width(),
            self.height()
        )
    }
}

/// The part of the world a picture shows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Crop {
    /// The driven path and the ego, plus [`TRAIL_MARGIN`].
    Trail,
    /// Every lane of the map.
    WholeMap,
    /// This rectangle (shared by pictures that are compared).
    Fixed(Bounds),
}

impl Crop {
    /// The rectangle this crop shows of `w` with `trail`.
    pub fn bounds(&self, w: &World, trail: &Trail) -> Bounds {
        let ego = w.ego.center(&w.cfg.vehicle);
        let only_ego = Bounds { min: ego, max: ego };
        match self {
            Crop::Fixed(b) => *b,
            Crop::Trail => Bounds::around(trail.points.iter().copied())
                .map_or(only_ego, |b| b.union(only_ego))
                .grown(TRAIL_MARGIN),
            Crop::WholeMap => w
                .map
                .lanes
                .iter()
                .filter_map(|lane| Bounds::around(w.map.lines.points(lane.line).iter().copied()))
                .fold(only_ego, Bounds::union)
                .grown(TRAIL_MARGIN),
        }
    }
}

/// Where and how an episode failed: the contact point of a collision (the mean of the corners
/// of each box inside the other), or the ego corners that left the drivable area.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Incident {
    pub end: EndReason,
    pub point: Vec2,
}

/// The incident of a world whose episode ended in a collision or off the road, else `None`.
pub fn incident(w: &World) -> Option<Incident> {
    let ego = w.ego_box();
    let contact = |other: &OrientedBox| {
        let inside: Vec<Vec2> = ego
            .corners()
            .into_iter()
            .filter(|&c| contains(other, c))
            .chain(other.corners().into_iter().filter(|&c| contains(&ego, c)))
            .collect();
        if inside.is_empty() {
            ego.center.lerp(other.center, 0.5)
        } else {
            mean(&inside)
        }
    };
    let point = match w.stats.end {
        EndReason::CollisionVehicle => w
            .agents
            .iter()
            .filter(|a| a.active)
            .map(agent_box)
            .find(|b| ego.overlaps(b))
            .map(|b| contact(&b)),
        EndReason::CollisionStatic => w.statics.iter().find(|b| ego.overlaps(b)).map(contact),
        EndReason::OffRoad => {
            let out: Vec<Vec2> = ego
                .corners()
                .into_iter()
                .filter(|&c| !w.map.is_drivable(c))
                .collect();
            (!out.is_empty()).then(|| mean(&out))
        }
        _ => None,
    };
    point.map(|point| Incident {
        end: w.stats.end,
        point,
    })
}

/// Renders the current state of `w` with the driven `trail` to an SVG document: the `crop`
/// of the world at [`PICTURE_WIDTH`] pixels, the title in its corner, a legend in a strip
/// under it, and the incident (collision or off-road point) marked.
pub fn render_svg(w: &World, trail: &Trail, title: &str, crop: Crop) -> String {
    let view = crop.bounds(w, trail);
    let (x0, y0) = (view.min.x, -view.max.y);
    let (wd, ht) = (view.width(), view.height());
    // Legend unit: its eight entries take about 65 units, so they fit in one row.
    let unit = 0.014 * wd;
    let strip = 3.2 * unit;
    let mut s = String::with_capacity(64 * 1024);
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"{x0:.2} {y0:.2} {wd:.2} {:.2}\" width=\"{PICTURE_WIDTH:.0}\" height=\"{:.0}\">",
        ht + strip,
        PICTURE_WIDTH * (ht + strip) / wd
    );
    let _ = writeln!(
        s,
        "<rect x=\"{x0:.2}\" y=\"{y0:.2}\" width=\"{wd:.2}\" height=\"{ht:.2}\" fill=\"#6a8f5a\"/>"
    );
    scene(w, trail, &mut s);
    incident_marker(w, (0.012 * wd).max(1.6), &mut s);
    let _ = writeln!(
        s,
        "<text x=\"{:.2}\" y=\"{:.2}\" font-size=\"{:.2}\" fill=\"white\" font-family=\"sans-serif\">{}</text>",
        x0 + 1.5 * unit,
        y0 + 3.0 * unit,
        2.0 * unit,
        xml_escape(title)
    );
    legend(&mut s, Vec2::new(x0, y0 + ht), wd, strip);
    s.push_str("</svg>\n");
    s
}

/// The world's elements in world metres (y flipped): lanes, route, lights, obstacles,
/// vehicles, the driven path, the plan and the ego ([`incident_marker`] adds the incident).
pub fn scene(w: &World, trail: &Trail, s: &mut String) {
    let ego_c = w.ego.center(&w.cfg.vehicle);
    // Lane surfaces, then centrelines.
    for lane in &w.map.lanes {
        let style = format!(
            "fill=\"none\" stroke=\"{LANE}\" stroke-width=\"{:.2}\" stroke-linejoin=\"round\"",
            lane.width
        );
        poly(s, w.map.lines.points(lane.line).iter().copied(), &style);
    }
    for lane in &w.map.lanes {
        poly(
            s,
            w.map.lines.points(lane.line).iter().copied(),
            "fill=\"none\" stroke=\"#ddd\" stroke-width=\"0.12\" stroke-dasharray=\"1.5 1.5\"",
        );
    }
    poly(
        s,
        w.map
            .lines
            .points(w.map.paths[w.route].line)
            .iter()
            .copied(),
        &format!("fill=\"none\" stroke=\"{ROUTE}\" stroke-width=\"0.5\" stroke-opacity=\"0.5\""),
    );
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
        rect(s, b, OBSTACLE);
    }
    for a in w.agents.iter().filter(|a| a.active) {
        rect(s, &agent_box(a), VEHICLE);
    }
    poly(
        s,
        trail.points.iter().copied(),
        &format!("fill=\"none\" stroke=\"{PATH}\" stroke-width=\"0.35\""),
    );
    let heading = Vec2::from_angle(w.ego.yaw);
    for wp in &w.last_plan {
        let p = Vec2::new(wp[0], wp[1]).from_frame(ego_c, heading);
        let _ = writeln!(
            s,
            "<circle cx=\"{:.2}\" cy=\"{:.2}\" r=\"0.3\" fill=\"{PLAN}\"/>",
            p.x, -p.y
        );
    }
    rect(s, &w.ego_box(), EGO);
}

/// Marks the incident of `w` (if its episode ended in one) with a red circle and cross of
/// `radius` metres, in world metres (y flipped).
pub fn incident_marker(w: &World, radius: f32, s: &mut String) {
    if let Some(i) = incident(w) {
        let (x, y, r) = (i.point.x, -i.point.y, radius);
        let stroke = 0.25 * r;
        let _ = writeln!(
            s,
            "<g class=\"incident\" data-end=\"{:?}\" data-x=\"{:.2}\" data-y=\"{:.2}\"><circle cx=\"{x:.2}\" cy=\"{y:.2}\" r=\"{r:.2}\" fill=\"none\" stroke=\"{INCIDENT}\" stroke-width=\"{stroke:.2}\"/><path d=\"M{:.2} {:.2}L{:.2} {:.2}M{:.2} {:.2}L{:.2} {:.2}\" stroke=\"{INCIDENT}\" stroke-width=\"{stroke:.2}\"/></g>",
            i.end,
            i.point.x,
            i.point.y,
            x - r,
            y - r,
            x + r,
            y + r,
            x - r,
            y + r,
            x + r,
            y - r
        );
    }
}

const LANE: &str = "#555";
const ROUTE: &str = "#4aa3ff";
const OBSTACLE: &str = "#8b5a2b";
const VEHICLE: &str = "#e8e8e8";
const PATH: &str = "#ff851b";
const PLAN: &str = "#b10dc9";
const EGO: &str = "#0074d9";
const INCIDENT: &str = "#ff0000";

/// The legend, one row in a white strip of height `strip` at `corner` (top-left, svg
/// coordinates), `width` wide.
pub fn legend(s: &mut String, corner: Vec2, width: f32, strip: f32) {
    let items: [(&str, &str, &str); 8] = [
        ("ego", EGO, "box"),
        ("other vehicle", VEHICLE, "box"),
        ("obstacle", OBSTACLE, "box"),
        ("driven path", PATH, "line"),
        ("plan", PLAN, "dot"),
        ("route", ROUTE, "line"),
        ("lane", LANE, "line"),
        ("collision / off-road", INCIDENT, "cross"),
    ];
    let unit = strip / 3.2;
    let font = 1.1 * unit;
    let _ = writeln!(
        s,
        "<g class=\"legend\" font-family=\"sans-serif\" font-size=\"{font:.2}\"><rect x=\"{:.2}\" y=\"{:.2}\" width=\"{width:.2}\" height=\"{strip:.2}\" fill=\"white\"/>",
        corner.x, corner.y
    );
    let y = corner.y + 0.5 * strip;
    let mut x = corner.x + unit;
    for (label, colour, symbol) in items {
        let sym = match symbol {
            "box" => format!(
                "<rect x=\"{x:.2}\" y=\"{:.2}\" width=\"{:.2}\" height=\"{:.2}\" fill=\"{colour}\" stroke=\"#222\" stroke-width=\"{:.2}\"/>",
                y - 0.4 * unit,
                1.4 * unit,
                0.8 * unit,
                0.05 * unit
            ),
            "line" => format!(
                "<line x1=\"{x:.2}\" y1=\"{y:.2}\" x2=\"{:.2}\" y2=\"{y:.2}\" stroke=\"{colour}\" stroke-width=\"{:.2}\"/>",
                x + 1.4 * unit,
                0.3 * unit
            ),
            "dot" => format!(
                "<circle cx=\"{:.2}\" cy=\"{y:.2}\" r=\"{:.2}\" fill=\"{colour}\"/>",
                x + 0.7 * unit,
                0.3 * unit
            ),
            _ => format!(
                "<path d=\"M{x:.2} {:.2}L{:.2} {:.2}M{x:.2} {:.2}L{:.2} {:.2}\" stroke=\"{colour}\" stroke-width=\"{:.2}\"/>",
                y - 0.5 * unit,
                x + unit,
                y + 0.5 * unit,
                y + 0.5 * unit,
                x + unit,
                y - 0.5 * unit,
                0.2 * unit
            ),
        };
        let _ = writeln!(
            s,
            "{sym}<text x=\"{:.2}\" y=\"{:.2}\">{label}</text>",
            x + 1.8 * unit,
            y + 0.4 * unit
        );
        // Advance by the label's approximate width (0.55 em per character).
        x += 1.8 * unit + 0.55 * font * label.len() as f32 + 1.2 * unit;
    }
    s.push_str("</g>\n");
}

fn agent_box(a: &crate::traffic::Agent) -> OrientedBox {
    OrientedBox {
        center: a.pos,
        heading: a.heading,
        half_length: 0.5 * a.length,
        half_width: 0.5 * a.width,
    }
}

fn contains(b: &OrientedBox, p: Vec2) -> bool {
    let d = p - b.center;
    d.dot(b.heading).abs() <= b.half_length && d.dot(b.heading.perp()).abs() <= b.half_width
}

fn mean(points: &[Vec2]) -> Vec2 {
    let n = points.len().max(1) as f32;
    let sum = points.iter().fold(Vec2::ZERO, |a, &p| a + p);
    Vec2::new(sum.x / n, sum.y / n)
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
