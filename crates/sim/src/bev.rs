//! The bird's-eye-view (BEV) raster observation: a `C x H x W` byte image of the world around
//! the ego, ego-centred and ego-aligned, for planners that are CNNs over a top-down raster
//! (ChauffeurNet- and Roach-style). The vector observation ([`crate::obs`]) stays the built-in
//! planner's input; this is the other one a planner may consume.
//!
//! **Geometry.** Row 0 is the farthest ahead, the ego drives up the image; column 0 is the
//! farthest to the ego's left, so the image reads like a map seen from above with the ego's
//! heading pointing up. In continuous pixel coordinates (row `v`, column `u`; pixel `(r, c)`
//! covers `[r, r+1) x [c, c+1)`), the ego's box centre sits at `v = H - behind_m / mpp`,
//! `u = W / 2`; an ego-frame point (`x` forward, `y` left, metres) is at
//! `v = H - (behind_m + x) / mpp`, `u = W / 2 - y / mpp`. A pixel belongs to a shape when its
//! centre does, so the pixel count of a box times `mpp^2` is its area up to the boundary pixels.
//!
//! **Values.** Bytes; a network reads `value = byte / 255` ([`to_unit_f32`]), so masks are 0 or
//! 1 and the speed channel is in steps of 0.1 m/s. Why bytes, not f32: a batch of rasters is a
//! quarter of the memory traffic (at 64 x 64 x 9, 36 KiB instead of 147 KiB per world: writing
//! f32 rasters into a batch buffer cost more than drawing them), the demonstrations store them
//! as they are, and the conversion to f32 fuses into the copy into a network's input tensor
//! (or into the network: `x.float() / 255` as its first operation).
//!
//! | index | name | content |
//! |---:|---|---|
//! | 0 | `drivable` | 255 on the drivable area (every lane, the union the off-road check uses; lanes end flat where nothing continues them) |
//! | 1 | `lane_boundaries` | 255 on the left and right edge of every lane (junction connectors included), lines about one pixel wide |
//! | 2 | `route` | 255 within [`ROUTE_HALF_WIDTH`] of the route's centreline, from the ego's position on it to the finish line |
//! | 3 | `vehicles` | 255 inside the box of every other vehicle and static obstacle |
//! | 4 | `speed` | speed in steps of 0.1 m/s (byte = round(10 v), at most 255 = [`SPEED_FULL_SCALE`] m/s) inside the box of every vehicle, the ego's included (0 for obstacles) |
//! | 5 | `light_red` | 255 on the stop line ([`STOP_LINE_DEPTH`] x [`STOP_LINE_WIDTH`] before it) of every red light |
//! | 6 | `light_yellow` | the same for yellow lights |
//! | 7 | `light_green` | the same for green lights |
//! | 8 | `ego` | 255 inside the ego's box |
//!
//! **Default** ([`BevSpec::default`]): 64 x 64 pixels at 0.75 m per pixel, 9 m behind the ego
//! and 39 m ahead, 24 m to each side. Why: the plan's horizon (10 waypoints over 2 s) covers
//! 40 m at 20 m/s, stopping comfortably for a red light from 14 m/s takes about 33 m, and at
//! 0.75 m/px a lane is 4.7 pixels and a car 6 x 2.5, enough for a small CNN; 64 x 64 keeps a
//! raster at 36 KiB and the rasteriser above the 20,000 rasters/s per core bar.
//!
//! **How it is drawn** (no allocation, no state, a pure function of the world): every raster is
//! rasterised from the world's geometry in the ego's frame, nothing is resampled. Lanes and the
//! route are strips (a polyline's left and right offset chains) filled with the non-zero
//! winding rule by edge-crossing accumulation (wrapping bytes) in the output plane itself, then
//! one prefix sum per row; off-screen stretches of a polyline are skipped in jumps that its uniform 1 m point
//! spacing makes safe. Boxes are filled as convex quadrilaterals, row by row; boundaries are
//! lines sampled every half pixel.

use crate::geom::{OrientedBox, Vec2};
use crate::road::{PolyId, Polylines, SPACING};
use crate::traffic::LightState;
use crate::world::World;
use serde::{Deserialize, Serialize};

/// The channels, in order: index = position in this array (the table in the module docs).
pub const CHANNELS: [&str; 9] = [
    "drivable",
    "lane_boundaries",
    "route",
    "vehicles",
    "speed",
    "light_red",
    "light_yellow",
    "light_green",
    "ego",
];

/// Number of channels `C`.
pub const NUM_CHANNELS: usize = CHANNELS.len();

/// Index of each channel in [`CHANNELS`].
pub mod channel {
    pub const DRIVABLE: usize = 0;
    pub const LANE_BOUNDARIES: usize = 1;
    pub const ROUTE: usize = 2;
    pub const VEHICLES: usize = 3;
    pub const SPEED: usize = 4;
    pub const LIGHT_RED: usize = 5;
    pub const LIGHT_YELLOW: usize = 6;
    pub const LIGHT_GREEN: usize = 7;
    pub const EGO: usize = 8;
}

/// Half the width of the route band, metres: narrower than a lane so the centre line reads.
pub const ROUTE_HALF_WIDTH: f32 = 1.0;
/// Speed at which the `speed` channel saturates at 255, m/s (one byte step is 0.1 m/s).
pub const SPEED_FULL_SCALE: f32 = 25.5;
/// Extent of a drawn stop line along the direction of travel, metres (ending at the line).
pub const STOP_LINE_DEPTH: f32 = 1.0;
/// Extent of a drawn stop line across the lane, metres (the simulator's lane width).
pub const STOP_LINE_WIDTH: f32 = 3.5;

/// Size, resolution and ego placement of a BEV raster. Check it with [`BevSpec::validate`]
/// before rendering (configuration loading does).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BevSpec {
    /// Rows `H` (along the ego's heading).
    pub height: usize,
    /// Columns `W` (across).
    pub width: usize,
    /// Metres per pixel, both directions.
    pub metres_per_pixel: f32,
    /// Metres shown behind the ego's box centre; the rest of the height lies ahead.
    pub behind_m: f32,
}

impl Default for BevSpec {
    fn default() -> Self {
        BevSpec {
            height: 64,
            width: 64,
            metres_per_pixel: 0.75,
            behind_m: 9.0,
        }
    }
}

/// Why a [`BevSpec`] cannot be rendered.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum BevSpecError {
    /// A field outside its allowed range.
    #[error("BEV field `{field}` = {value} is out of range: allowed {min} to {max}")]
    OutOfRange {
        field: &'static str,
        value: f64,
        min: f64,
        max: f64,
    },
    /// The ego would sit outside the raster.
    #[error(
        "BEV `behind_m` = {behind_m} puts the ego outside the raster, which spans {extent_m} m \
         (height x metres_per_pixel): allowed 0 to {extent_m}"
    )]
    EgoOutside { behind_m: f32, extent_m: f32 },
}

impl BevSpec {
    /// Allowed ranges, by field name (sizes in pixels, lengths in metres).
    pub const RANGES: [(&'static str, f64, f64); 3] = [
        ("height", 8.0, 512.0),
        ("width", 8.0, 512.0),
        ("metres_per_pixel", 0.05, 5.0),
    ];

    /// Checks every field; NaN is out of every range.
    pub fn validate(&self) -> Result<(), BevSpecError> {
        let values = [
            self.height as f64,
            self.width as f64,
            f64::from(self.metres_per_pixel),
        ];
        for ((field, min, max), value) in Self::RANGES.into_iter().zip(values) {
            if !(min..=max).contains(&value) {
                return Err(BevSpecError::OutOfRange {
                    field,
                    value,
                    min,
                    max,
                });
            }
        }
        let extent_m = self.height as f32 * self.metres_per_pixel;
        if !(0.0..=extent_m).contains(&self.behind_m) {
            return Err(BevSpecError::EgoOutside {
                behind_m: self.behind_m,
                extent_m,
            });
        }
        Ok(())
    }

    /// `[C, H, W]`.
    pub fn shape(&self) -> [usize; 3] {
        [NUM_CHANNELS, self.height, self.width]
    }

    /// Bytes in one raster, `C * H * W`.
    pub fn len(&self) -> usize {
        NUM_CHANNELS * self.plane()
    }

    /// Always false: a valid raster has pixels (for clippy's `len` convention).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes in one channel, `H * W`.
    pub fn plane(&self) -> usize {
        self.height * self.width
    }

    /// The ego-frame point (metres, `x` forward, `y` left) at the centre of pixel `(row, col)`.
    pub fn pixel_centre(&self, row: usize, col: usize) -> Vec2 {
        let mpp = self.metres_per_pixel;
        Vec2::new(
            (self.height as f32 - (row as f32 + 0.5)) * mpp - self.behind_m,
            (0.5 * self.width as f32 - (col as f32 + 0.5)) * mpp,
        )
    }
}

/// The value of a mask pixel that is set.
pub const ON: u8 = 255;

/// Renders the BEV raster of `w` into `out` (`[C, H, W]` bytes, length [`BevSpec::len`]; every
/// byte is overwritten). `spec` must be valid ([`BevSpec::validate`]).
pub fn render(w: &World, spec: &BevSpec, out: &mut [u8]) {
    assert_eq!(out.len(), spec.len(), "BEV buffer must be [C, H, W]");
    debug_assert!(spec.validate().is_ok(), "{:?}", spec.validate());
    out.fill(0);
    let vp = &w.cfg.vehicle;
    let view = View::new(spec, w.ego.center(vp), Vec2::from_angle(w.ego.yaw));
    let plane = spec.plane();
    let (map_planes, rest) = out.split_at_mut(channel::VEHICLES * plane);
    let (drivable, rest_map) = map_planes.split_at_mut(plane);
    let (boundaries, route) = rest_map.split_at_mut(plane);

    // Map: lane strips (winding counts accumulate in the drivable plane), their edges, and
    // the route band from the ego to the finish line.
    let lines = &w.map.lines;
    for lane in &w.map.lanes {
        let strip = Strip {
            line: lane.line,
            from: 0.0,
            to: lines.length(lane.line),
            half_width: 0.5 * lane.width,
        };
        view.strip(lines, &strip, drivable, Some(&mut *boundaries));
    }
    let route_strip = Strip {
        line: w.map.paths[w.route].line,
        from: w.route_s,
        to: w.route_len,
        half_width: ROUTE_HALF_WIDTH,
    };
    if route_strip.to > route_strip.from {
        view.strip(lines, &route_strip, route, None);
    }
    view.resolve_winding(drivable);
    view.resolve_winding(route);

    // Objects: other vehicles and obstacles, lights at their stop lines, the ego last.
    let (vehicles, after) = rest.split_at_mut(plane);
    let (speed, after) = after.split_at_mut(plane);
    let (lights, ego_plane) = after.split_at_mut(3 * plane);
    for a in w.agents.iter().filter(|a| a.active) {
        let b = OrientedBox {
            center: a.pos,
            heading: a.heading,
            half_length: 0.5 * a.length,
            half_width: 0.5 * a.width,
        };
        let corners = view.corners(&b);
        view.fill_convex(&corners, vehicles, ON);
        view.fill_convex(&corners, speed, speed_byte(a.v));
    }
    for b in &w.statics {
        let corners = view.corners(b);
        view.fill_convex(&corners, vehicles, ON);
        view.fill_convex(&corners, speed, 0);
    }
    let t = w.time();
    for l in &w.lights {
        let k = match l.state(t) {
            LightState::Red => 0,
            LightState::Yellow => 1,
            LightState::Green => 2,
        };
        let line = OrientedBox {
            center: l.pos - l.heading * (0.5 * STOP_LINE_DEPTH),
            heading: l.heading,
            half_length: 0.5 * STOP_LINE_DEPTH,
            half_width: 0.5 * STOP_LINE_WIDTH,
        };
        view.fill_convex(
            &view.corners(&line),
            &mut lights[k * plane..(k + 1) * plane],
            ON,
        );
    }
    let corners = view.corners(&w.ego_box());
    view.fill_convex(&corners, ego_plane, ON);
    view.fill_convex(&corners, speed, speed_byte(w.ego.v));
}

/// The `speed` channel's byte for a speed in m/s: whole steps of 0.1 m/s, at most 255.
pub fn speed_byte(v: f32) -> u8 {
    (v * (255.0 / SPEED_FULL_SCALE)).round().clamp(0.0, 255.0) as u8
}

/// What a network reads: `out[i] = bytes[i] / 255` (masks 0 or 1, speed / 25.5 m/s).
pub fn to_unit_f32(bytes: &[u8], out: &mut [f32]) {
    assert_eq!(bytes.len(), out.len(), "one float per byte");
    for (o, &b) in out.iter_mut().zip(bytes) {
        *o = f32::from(b) / 255.0;
    }
}

/// `ceil(x)` as an integer (saturating), without the libm call `f32::ceil` becomes on
/// targets without SSE4.1.
#[inline]
fn ceil_to_i32(x: f32) -> i32 {
    let t = x as i32;
    t + i32::from((t as f32) < x)
}

/// A stretch `[from, to]` (arc length, metres) of a polyline, widened to a band.
struct Strip {
    line: PolyId,
    from: f32,
    to: f32,
    half_width: f32,
}

/// The world-to-pixel map of one raster: `u = u0 + p . gu`, `v = v0 + p . gv`.
struct View {
    width: usize,
    height: usize,
    u0: f32,
    v0: f32,
    gu: Vec2,
    gv: Vec2,
    inv_mpp: f32,
}

/// A point in continuous pixel coordinates (`u` column, `v` row).
#[derive(Clone, Copy, Debug)]
struct Px {
    u: f32,
    v: f32,
}

impl View {
    fn new(spec: &BevSpec, centre: Vec2, heading: Vec2) -> View {
        let inv = 1.0 / spec.metres_per_pixel;
        let row_ego = spec.height as f32 - spec.behind_m * inv;
        let col_ego = 0.5 * spec.width as f32;
        // x = (p - c) . h, y = h x (p - c) = (p - c) . perp(h); u = col - y/mpp, v = row - x/mpp.
        let gu = heading.perp() * -inv;
        let gv = heading * -inv;
        View {
            width: spec.width,
            height: spec.height,
            u0: col_ego - centre.dot(gu),
            v0: row_ego - centre.dot(gv),
            gu,
            gv,
            inv_mpp: inv,
        }
    }

    #[inline]
    fn px(&self, p: Vec2) -> Px {
        Px {
            u: self.u0 + p.dot(self.gu),
            v: self.v0 + p.dot(self.gv),
        }
    }

    /// Chebyshev distance of `q` outside the raster rectangle, pixels (0 inside).
    #[inline]
    fn outside(&self, q: Px) -> f32 {
        let du = (-q.u).max(q.u - self.width as f32);
        let dv = (-q.v).max(q.v - self.height as f32);
        du.max(dv).max(0.0)
    }

    fn corners(&self, b: &OrientedBox) -> [Px; 4] {
        b.corners().map(|p| self.px(p))
    }

    /// Emits the band of `s` into `acc` as winding crossings (resolved later by
    /// [`View::resolve_winding`]) and, when given, draws its two edges into `edges`.
    fn strip(&self, lines: &Polylines, s: &Strip, acc: &mut [u8], mut edges: Option<&mut [u8]>) {
        let pts = lines.points(s.line);
        // The band's centre line: the point at `from`, the polyline's points strictly inside
        // (from, to), the point at `to`; consecutive ones at most SPACING apart.
        let first_inner = ((s.from / SPACING).floor() as usize + 1).min(pts.len());
        let end_inner = ((s.to / SPACING).ceil().max(0.0) as usize).clamp(first_inner, pts.len());
        let inner = &pts[first_inner..end_inner];
        let (start, start_dir) = lines.sample(s.line, s.from);
        let (end, end_dir) = lines.sample(s.line, s.to);
        let count = inner.len() + 2;
        let centre = |k: usize| -> Vec2 {
            if k == 0 {
                start
            } else if k == count - 1 {
                end
            } else {
                inner[k - 1]
            }
        };
        // Visible range, skipping ahead where the centre line is far outside: a point moves at
        // most SPACING metres per index.
        // A quad between neighbours reaches at most half a width plus one spacing from either.
        let step_px = SPACING * self.inv_mpp;
        let margin = s.half_width * self.inv_mpp + step_px + 1.0;
        let (mut lo, mut hi) = (usize::MAX, 0);
        let mut k = 0;
        while k < count {
            let d = self.outside(self.px(centre(k)));
            if d <= margin {
                lo = lo.min(k);
                hi = k;
                k += 1;
            } else {
                k += (((d - margin) / step_px) as usize).max(1);
            }
        }
        if lo == usize::MAX {
            return;
        }
        let lo = lo.saturating_sub(1);
        let hi = (hi + 1).min(count - 1);
        // Offset chains: left and right of each centre point, normals from the neighbours (the
        // sampled direction at the ends). Points where the direction has not turned since the
        // last drawn one are skipped (straight stretches become one edge): over at most
        // MAX_RUN points within TURN_TOLERANCE radians, the chain moves by at most 2 cm.
        const MAX_RUN: usize = 16;
        const TURN_TOLERANCE: f32 = 1e-3;
        let direction = |k: usize| -> Vec2 {
            if k == 0 {
                start_dir
            } else if k == count - 1 {
                end_dir
            } else {
                let t = centre(k + 1) - centre(k - 1);
                t * (1.0 / t.norm().max(1e-6))
            }
        };
        let offsets = |k: usize, dir: Vec2| -> (Px, Px) {
            let n = dir.perp() * s.half_width;
            let c = centre(k);
            (self.px(c + n), self.px(c - n))
        };
        let mut run_dir = direction(lo);
        let (mut left, mut right) = offsets(lo, run_dir);
        let mut run = 0;
        // Closing edge at the start (right to left), then both chains, then the end.
        self.crossings(acc, right, left);
        for k in lo + 1..=hi {
            let dir = direction(k);
            run += 1;
            let straight = run_dir.dot(dir) > 0.0 && run_dir.cross(dir).abs() < TURN_TOLERANCE;
            if k < hi && run < MAX_RUN && straight {
                continue;
            }
            let (l, r) = offsets(k, dir);
            self.crossings(acc, left, l);
            self.crossings(acc, r, right);
            if let Some(e) = edges.as_deref_mut() {
                self.line(e, left, l);
                self.line(e, right, r);
            }
            left = l;
            right = r;
            run_dir = dir;
            run = 0;
        }
        self.crossings(acc, left, right);
    }

    /// Adds the edge `a -> b`'s crossings of every row centre to `acc`: +1 or -1 (by direction,
    /// wrapping bytes) at the first pixel whose centre lies right of the crossing; crossings
    /// right of the raster change nothing, those left of it count at column 0.
    #[inline]
    fn crossings(&self, acc: &mut [u8], a: Px, b: Px) {
        if a.v == b.v {
            return;
        }
        let (dir, top, bottom) = if a.v < b.v {
            (1u8, a, b)
        } else {
            (u8::MAX, b, a)
        };
        // Rows whose centre r + 0.5 lies in [top.v, bottom.v).
        let r0 = self.row_at_or_below(top.v);
        let r1 = self.row_at_or_below(bottom.v);
        if r0 >= r1 {
            return;
        }
        let slope = (bottom.u - top.u) / (bottom.v - top.v);
        for r in r0..r1 {
            let u = top.u + (r as f32 + 0.5 - top.v) * slope;
            let c = ceil_to_i32(u - 0.5).max(0) as usize;
            if c < self.width {
                let x = &mut acc[r * self.width + c];
                *x = x.wrapping_add(dir);
            }
        }
    }

    /// Turns accumulated winding crossings into a mask: [`ON`] where the running sum along the
    /// row is non-zero (modulo 256: no pixel lies inside 256 lanes).
    fn resolve_winding(&self, acc: &mut [u8]) {
        for row in acc.chunks_exact_mut(self.width) {
            let mut winding = 0u8;
            for x in row.iter_mut() {
                winding = winding.wrapping_add(*x);
                *x = ON * u8::from(winding != 0);
            }
        }
    }

    /// Sets every pixel whose centre lies in the convex quadrilateral `q` to `value`.
    fn fill_convex(&self, q: &[Px; 4], plane: &mut [u8], value: u8) {
        let vmin = q.iter().map(|p| p.v).fold(f32::INFINITY, f32::min);
        let vmax = q.iter().map(|p| p.v).fold(f32::NEG_INFINITY, f32::max);
        let r0 = self.row_at_or_below(vmin);
        let r1 = self.row_at_or_below(vmax);
        for r in r0..r1 {
            let y = r as f32 + 0.5;
            let (mut a, mut b) = (f32::INFINITY, f32::NEG_INFINITY);
            for i in 0..4 {
                let (p, n) = (q[i], q[(i + 1) % 4]);
                let (top, bottom) = if p.v < n.v { (p, n) } else { (n, p) };
                if top.v <= y && y < bottom.v {
                    let u = top.u + (y - top.v) * (bottom.u - top.u) / (bottom.v - top.v);
                    a = a.min(u);
                    b = b.max(u);
                }
            }
            if a > b {
                continue;
            }
            let c0 = self.column_at_or_right_of(a);
            let c1 = self.column_at_or_right_of(b);
            plane[r * self.width + c0..r * self.width + c1].fill(value);
        }
    }

    /// Sets the pixels under the segment `a -> b` at steps of at most one pixel along its
    /// major axis (a connected line; the start point is left to the previous segment).
    fn line(&self, plane: &mut [u8], a: Px, b: Px) {
        let (w, h) = (self.width as f32, self.height as f32);
        // Entirely outside on one side: nothing to draw.
        if (a.u < 0.0 && b.u < 0.0)
            || (a.v < 0.0 && b.v < 0.0)
            || (a.u >= w && b.u >= w)
            || (a.v >= h && b.v >= h)
        {
            return;
        }
        let len = (b.u - a.u).abs().max((b.v - a.v).abs());
        let n = ceil_to_i32(len).max(1);
        let (du, dv) = ((b.u - a.u) / n as f32, (b.v - a.v) / n as f32);
        for i in 1..=n {
            let (u, v) = (a.u + du * i as f32, a.v + dv * i as f32);
            if u >= 0.0 && v >= 0.0 && u < w && v < h {
                plane[v as usize * self.width + u as usize] = ON;
            }
        }
    }

    /// The first row whose centre lies at or below `v` (clamped to `0..=H`).
    #[inline]
    fn row_at_or_below(&self, v: f32) -> usize {
        ceil_to_i32(v - 0.5).clamp(0, self.height as i32) as usize
    }

    /// The first column whose centre lies at or right of `u` (clamped to `0..=W`).
    #[inline]
    fn column_at_or_right_of(&self, u: f32) -> usize {
        ceil_to_i32(u - 0.5).clamp(0, self.width as i32) as usize
    }
}
