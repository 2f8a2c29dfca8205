//! A small top-down rasteriser for `render(mode="rgb_array")`: the SVG scene's layers (drivable
//! area, lights, obstacles, traffic, planned waypoints, ego) drawn straight from the world into
//! an RGB image, north up, centred on the ego. No font or SVG stack: every pixel is a point
//! query on the world.

use deltaplan_sim::geom::{OrientedBox, Vec2};
use deltaplan_sim::traffic::LightState;
use deltaplan_sim::World;

const GRASS: [u8; 3] = [106, 143, 90];
const ROAD: [u8; 3] = [85, 85, 85];
const OBSTACLE: [u8; 3] = [139, 90, 43];
const AGENT: [u8; 3] = [232, 232, 232];
const EGO: [u8; 3] = [0, 116, 217];
const PLAN: [u8; 3] = [177, 13, 201];

/// `size` x `size` RGB bytes (row-major, 3 per pixel) covering `metres` x `metres` around the ego.
pub fn render_rgb(w: &World, size: usize, metres: f32) -> Vec<u8> {
    let centre = w.ego.center(&w.cfg.vehicle);
    let canvas = Canvas {
        centre,
        px_per_m: size as f32 / metres,
        size,
    };
    let mut image = vec![0u8; size * size * 3];
    for row in 0..size {
        for col in 0..size {
            let p = canvas.point(row, col);
            let colour = if w.map.is_drivable(p) { ROAD } else { GRASS };
            image[(row * size + col) * 3..][..3].copy_from_slice(&colour);
        }
    }
    let t = w.time();
    for l in &w.lights {
        let colour = match l.state(t) {
            LightState::Green => [46, 204, 64],
            LightState::Yellow => [255, 220, 0],
            LightState::Red => [255, 65, 54],
        };
        let bar = OrientedBox::new(l.pos, l.heading.y.atan2(l.heading.x), 0.6, 3.5);
        canvas.fill_box(&mut image, &bar, colour);
    }
    for b in &w.statics {
        canvas.fill_box(&mut image, b, OBSTACLE);
    }
    for a in w.agents.iter().filter(|a| a.active) {
        let b = OrientedBox {
            center: a.pos,
            heading: a.heading,
            half_length: 0.5 * a.length,
            half_width: 0.5 * a.width,
        };
        canvas.fill_box(&mut image, &b, AGENT);
    }
    let heading = Vec2::from_angle(w.ego.yaw);
    for wp in &w.last_plan {
        let p = Vec2::new(wp[0], wp[1]).from_frame(centre, heading);
        canvas.fill_box(&mut image, &OrientedBox::new(p, 0.0, 0.6, 0.6), PLAN);
    }
    canvas.fill_box(&mut image, &w.ego_box(), EGO);
    image
}

struct Canvas {
    centre: Vec2,
    px_per_m: f32,
    size: usize,
}

impl Canvas {
    /// The world point at the centre of pixel (`row`, `col`).
    fn point(&self, row: usize, col: usize) -> Vec2 {
        let half = self.size as f32 / 2.0;
        Vec2::new(
            self.centre.x + (col as f32 + 0.5 - half) / self.px_per_m,
            self.centre.y - (row as f32 + 0.5 - half) / self.px_per_m,
        )
    }

    fn fill_box(&self, image: &mut [u8], b: &OrientedBox, colour: [u8; 3]) {
        let half = self.size as f32 / 2.0;
        let r = b.radius();
        let to_col = |x: f32| (x - self.centre.x) * self.px_per_m + half;
        let to_row = |y: f32| (self.centre.y - y) * self.px_per_m + half;
        let clamp = |v: f32| v.clamp(0.0, self.size as f32) as usize;
        let (c0, c1) = (
            clamp(to_col(b.center.x - r)),
            clamp(to_col(b.center.x + r) + 1.0),
        );
        let (r0, r1) = (
            clamp(to_row(b.center.y + r)),
            clamp(to_row(b.center.y - r) + 1.0),
        );
        // Boxes smaller than a pixel still show as one pixel.
        let min_half = 0.5 / self.px_per_m;
        for row in r0..r1 {
            for col in c0..c1 {
                let local = self.point(row, col).to_frame(b.center, b.heading);
                if local.x.abs() <= b.half_length.max(min_half)
                    && local.y.abs() <= b.half_width.max(min_half)
                {
                    image[(row * self.size + col) * 3..][..3].copy_from_slice(&colour);
                }
            }
        }
    }
}
