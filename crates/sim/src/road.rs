//! Road network: lanes with centreline polylines, paths (routes) over lanes, and the drivable
//! area (union of lanes) with a uniform-grid index for O(1) point queries.
//!
//! Every polyline is resampled at a uniform arc-length spacing [`SPACING`], so the point at
//! arc length `s` is found by index arithmetic instead of a search; that keeps traffic and the
//! ego's route tracking O(1) per vehicle and step. All storage is flat and reused across
//! resets: building a new map clears and refills vectors without giving their memory back.

use crate::geom::Vec2;

/// Arc-length spacing of resampled polylines, metres.
pub const SPACING: f32 = 1.0;

/// Index of a polyline in a [`Polylines`] store.
pub type PolyId = u32;

#[derive(Clone, Copy, Debug, Default)]
struct Span {
    start: u32,
    len: u32,
    length: f32,
}

/// Flat storage of uniformly resampled polylines.
#[derive(Clone, Debug, Default)]
pub struct Polylines {
    pts: Vec<Vec2>,
    spans: Vec<Span>,
}

impl Polylines {
    pub fn clear(&mut self) {
        self.pts.clear();
        self.spans.clear();
    }

    /// Appends a polyline resampled at [`SPACING`] from the dense input `src` (at least two
    /// distinct points). Returns its id.
    pub fn push_resampled(&mut self, src: &[Vec2]) -> PolyId {
        let start = self.pts.len() as u32;
        self.pts.push(src[0]);
        let mut next_s = SPACING;
        let mut acc = 0.0f32;
        for w in src.windows(2) {
            let seg = (w[1] - w[0]).norm();
            if seg <= 0.0 {
                continue;
            }
            while acc + seg >= next_s {
                let t = (next_s - acc) / seg;
                self.pts.push(w[0].lerp(w[1], t));
                next_s += SPACING;
            }
            acc += seg;
        }
        let last = *src.last().expect("non-empty source");
        let tail = acc - (next_s - SPACING);
        if tail > 1e-3 {
            self.pts.push(last);
        } else if let Some(p) = self.pts.last_mut() {
            *p = last;
        }
        let len = self.pts.len() as u32 - start;
        let length = if tail > 1e-3 {
            next_s - SPACING + tail
        } else {
            next_s - SPACING
        };
        self.spans.push(Span { start, len, length });
        (self.spans.len() - 1) as PolyId
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The resampled points of polyline `id`.
    pub fn points(&self, id: PolyId) -> &[Vec2] {
        let sp = self.spans[id as usize];
        &self.pts[sp.start as usize..(sp.start + sp.len) as usize]
    }

    /// Total arc length of polyline `id`, metres.
    pub fn length(&self, id: PolyId) -> f32 {
        self.spans[id as usize].length
    }

    /// Point and unit tangent at arc length `s` (clamped to the polyline; beyond either end the
    /// end segment is extended linearly so look-ups past the end stay well defined).
    #[inline]
    pub fn sample(&self, id: PolyId, s: f32) -> (Vec2, Vec2) {
        let sp = self.spans[id as usize];
        let pts = &self.pts[sp.start as usize..(sp.start + sp.len) as usize];
        let nseg = pts.len() - 1;
        let i = ((s / SPACING).floor().max(0.0) as usize).min(nseg - 1);
        let a = pts[i];
        let b = pts[i + 1];
        let seg = b - a;
        let seg_len = seg.norm().max(1e-6);
        let t = (s - i as f32 * SPACING) / seg_len;
        let dir = seg * (1.0 / seg_len);
        (a + seg * t, dir)
    }

    /// Projects `p` onto polyline `id` starting from the arc-length guess `s_hint`; returns
    /// `(s, signed lateral offset, tangent)`, lateral positive to the left. Newton steps on the
    /// uniform parametrisation converge in two or three iterations when the hint is within a few
    /// metres, which is always true for a vehicle tracked step to step.
    #[inline]
    pub fn project(&self, id: PolyId, p: Vec2, s_hint: f32) -> (f32, f32, Vec2) {
        let len = self.length(id);
        let mut s = s_hint.clamp(0.0, len);
        let mut q;
        let mut t;
        let mut it = 0;
        loop {
            (q, t) = self.sample(id, s);
            let ds = (p - q).dot(t);
            let ns = (s + ds).clamp(0.0, len);
            it += 1;
            if (ns - s).abs() < 1e-3 || it == 4 {
                s = ns;
                (q, t) = self.sample(id, s);
                break;
            }
            s = ns;
        }
        (s, t.cross(p - q), t)
    }

    /// Projects `p` without a hint: global nearest-segment search. Used at reset only.
    pub fn project_global(&self, id: PolyId, p: Vec2) -> (f32, f32) {
        let pts = self.points(id);
        let mut best = (f32::INFINITY, 0.0f32, 0.0f32);
        for (i, w) in pts.windows(2).enumerate() {
            let seg = w[1] - w[0];
            let l2 = seg.norm_sq().max(1e-12);
            let t = ((p - w[0]).dot(seg) / l2).clamp(0.0, 1.0);
            let q = w[0] + seg * t;
            let d2 = (p - q).norm_sq();
            if d2 < best.0 {
                let lat = seg.cross(p - w[0]) / l2.sqrt();
                best = (d2, i as f32 * SPACING + t * l2.sqrt(), lat);
            }
        }
        (best.1, best.2)
    }
}

/// The allowed speed at every point of a route resampled at [`SPACING`] (into `out`): the
/// lane limit (`limit_at(arc length)`), the speed at which a bend's lateral acceleration
/// stays within `lateral_accel`, and a backward pass so braking at `comfort_brake` for a bend
/// starts in time. The observation's allowed speed; the expert drives to it.
pub fn speed_profile(
    pts: &[Vec2],
    limit_at: impl Fn(f32) -> f32,
    lateral_accel: f32,
    comfort_brake: f32,
    out: &mut Vec<f32>,
) {
    let n = pts.len();
    out.clear();
    for i in 0..n {
        let a = pts[i.saturating_sub(2)];
        let b = pts[i];
        let c = pts[(i + 2).min(n - 1)];
        // Curvature from the circumscribed circle of three points.
        let ab = (b - a).norm();
        let bc = (c - b).norm();
        let ca = (a - c).norm();
        let area2 = (b - a).cross(c - a).abs();
        let k = if ab * bc * ca > 1e-6 {
            2.0 * area2 / (ab * bc * ca)
        } else {
            0.0
        };
        let limit = limit_at(i as f32 * SPACING);
        let v_curve = if k > 1e-4 {
            (lateral_accel / k).sqrt()
        } else {
            f32::INFINITY
        };
        out.push(limit.min(v_curve));
    }
    for i in (0..n.saturating_sub(1)).rev() {
        let next = out[i + 1];
        let reach = (next * next + 2.0 * comfort_brake * SPACING).sqrt();
        if reach < out[i] {
            out[i] = reach;
        }
    }
}

/// Index of a lane in a [`RoadMap`].
pub type LaneId = u16;

/// One lane: a centreline with a width and a speed limit, linked to its neighbours.
#[derive(Clone, Copy, Debug)]
pub struct Lane {
    pub line: PolyId,
    pub width: f32,
    /// Metres per second.
    pub speed_limit: f32,
    /// Up to three successor lanes (`None` past `successor_count`).
    pub successors: [LaneId; 3],
    pub successor_count: u8,
    /// Neighbouring lanes in the same direction.
    pub left: Option<LaneId>,
    pub right: Option<LaneId>,
}

/// A path a vehicle follows: a lane sequence, its concatenated centreline, and the traffic-light
/// stop lines along it.
#[derive(Clone, Copy, Debug)]
pub struct Path {
    pub line: PolyId,
    /// Range into [`RoadMap::path_lanes`].
    pub lanes: (u32, u32),
    /// Range into [`RoadMap::stops`].
    pub stops: (u32, u32),
}

/// A lane of a path and the arc length on the path where it begins.
#[derive(Clone, Copy, Debug)]
pub struct PathLane {
    pub lane: LaneId,
    pub s_start: f32,
}

/// A stop line on a path, controlled by a traffic light.
#[derive(Clone, Copy, Debug)]
pub struct StopLine {
    pub s: f32,
    pub light: u16,
}

/// A grid cell entry: the segment starting at global point `p` of lane `lane`.
#[derive(Clone, Copy, Debug)]
struct CellItem {
    p: u32,
    lane: LaneId,
}

/// The road network of one world.
#[derive(Clone, Debug, Default)]
pub struct RoadMap {
    pub lines: Polylines,
    pub lanes: Vec<Lane>,
    pub paths: Vec<Path>,
    pub path_lanes: Vec<PathLane>,
    pub stops: Vec<StopLine>,
    grid: Grid,
    /// Per lane: bit 0 = the start is open (no predecessor), bit 1 = the end is open (no
    /// successor). Only open ends are flat; connected ends join their neighbour seamlessly.
    open_ends: Vec<u8>,
    scratch_dense: Vec<Vec2>,
    scratch_pairs: Vec<(u32, CellItem)>,
}

#[derive(Clone, Debug, Default)]
struct Grid {
    origin: Vec2,
    cell: f32,
    nx: u32,
    ny: u32,
    start: Vec<u32>,
    items: Vec<CellItem>,
}

impl RoadMap {
    pub fn clear(&mut self) {
        self.lines.clear();
        self.lanes.clear();
        self.paths.clear();
        self.path_lanes.clear();
        self.stops.clear();
    }

    /// Adds a lane from a dense centreline.
    pub fn add_lane(&mut self, centreline: &[Vec2], width: f32, speed_limit: f32) -> LaneId {
        let line = self.lines.push_resampled(centreline);
        self.lanes.push(Lane {
            line,
            width,
            speed_limit,
            successors: [0; 3],
            successor_count: 0,
            left: None,
            right: None,
        });
        (self.lanes.len() - 1) as LaneId
    }

    pub fn link(&mut self, from: LaneId, to: LaneId) {
        let l = &mut self.lanes[from as usize];
        let n = l.successor_count as usize;
        assert!(n < 3, "at most three successors per lane");
        l.successors[n] = to;
        l.successor_count += 1;
    }

    pub fn set_neighbours(&mut self, left: LaneId, right: LaneId) {
        self.lanes[left as usize].right = Some(right);
        self.lanes[right as usize].left = Some(left);
    }

    /// Builds a path over a lane sequence (each lane must be a successor of the previous one),
    /// concatenating centrelines. `lights[i]` is the light controlling the end of `lanes[i]`
    /// (its stop line), if any. Returns the path index.
    pub fn add_path(&mut self, lanes: &[LaneId], lights: &[Option<u16>]) -> usize {
        debug_assert_eq!(lanes.len(), lights.len());
        let mut dense = std::mem::take(&mut self.scratch_dense);
        dense.clear();
        let lanes_start = self.path_lanes.len() as u32;
        let stops_start = self.stops.len() as u32;
        let mut s = 0.0;
        for (k, &lane) in lanes.iter().enumerate() {
            if k > 0 {
                let prev = &self.lanes[lanes[k - 1] as usize];
                debug_assert!(prev.successors[..prev.successor_count as usize].contains(&lane));
            }
            let line = self.lanes[lane as usize].line;
            let pts = self.lines.points(line);
            let skip = usize::from(!dense.is_empty());
            dense.extend_from_slice(&pts[skip..]);
            self.path_lanes.push(PathLane { lane, s_start: s });
            s += self.lines.length(line);
            if let Some(light) = lights[k] {
                self.stops.push(StopLine { s, light });
            }
        }
        let line = self.lines.push_resampled(&dense);
        self.scratch_dense = dense;
        self.paths.push(Path {
            line,
            lanes: (lanes_start, self.path_lanes.len() as u32),
            stops: (stops_start, self.stops.len() as u32),
        });
        self.paths.len() - 1
    }

    pub fn path_length(&self, path: usize) -> f32 {
        self.lines.length(self.paths[path].line)
    }

    pub fn path_stops(&self, path: usize) -> &[StopLine] {
        let (a, b) = self.paths[path].stops;
        &self.stops[a as usize..b as usize]
    }

    pub fn path_lanes(&self, path: usize) -> &[PathLane] {
        let (a, b) = self.paths[path].lanes;
        &self.path_lanes[a as usize..b as usize]
    }

    /// The lane of `path` at arc length `s`.
    pub fn lane_at(&self, path: usize, s: f32) -> LaneId {
        let lanes = self.path_lanes(path);
        let i = lanes.partition_point(|pl| pl.s_start <= s).max(1) - 1;
        lanes[i].lane
    }

    /// Builds the drivable-area index. Call once after all lanes are added and linked.
    pub fn build_index(&mut self) {
        self.open_ends.clear();
        self.open_ends.resize(self.lanes.len(), 3);
        for i in 0..self.lanes.len() {
            let l = self.lanes[i];
            if l.successor_count > 0 {
                self.open_ends[i] &= !2;
            }
            for &succ in &l.successors[..l.successor_count as usize] {
                self.open_ends[succ as usize] &= !1;
            }
        }
        let mut lo = Vec2::new(f32::INFINITY, f32::INFINITY);
        let mut hi = Vec2::new(f32::NEG_INFINITY, f32::NEG_INFINITY);
        let mut max_w: f32 = 0.0;
        for lane in &self.lanes {
            for p in self.lines.points(lane.line) {
                lo = Vec2::new(lo.x.min(p.x), lo.y.min(p.y));
                hi = Vec2::new(hi.x.max(p.x), hi.y.max(p.y));
            }
            max_w = max_w.max(lane.width);
        }
        let cell = 4.0f32;
        let pad = max_w + cell;
        let origin = lo - Vec2::new(pad, pad);
        let nx = (((hi.x - lo.x) + 2.0 * pad) / cell).ceil() as u32 + 1;
        let ny = (((hi.y - lo.y) + 2.0 * pad) / cell).ceil() as u32 + 1;
        let mut pairs = std::mem::take(&mut self.scratch_pairs);
        pairs.clear();
        for (li, lane) in self.lanes.iter().enumerate() {
            let sp = self.lines.spans[lane.line as usize];
            let r = 0.5 * lane.width;
            for k in 0..sp.len - 1 {
                let p = sp.start + k;
                let a = self.lines.pts[p as usize];
                let b = self.lines.pts[p as usize + 1];
                let x0 = ((a.x.min(b.x) - r - origin.x) / cell).floor() as u32;
                let x1 = ((a.x.max(b.x) + r - origin.x) / cell).floor() as u32;
                let y0 = ((a.y.min(b.y) - r - origin.y) / cell).floor() as u32;
                let y1 = ((a.y.max(b.y) + r - origin.y) / cell).floor() as u32;
                for cy in y0..=y1.min(ny - 1) {
                    for cx in x0..=x1.min(nx - 1) {
                        pairs.push((
                            cy * nx + cx,
                            CellItem {
                                p,
                                lane: li as LaneId,
                            },
                        ));
                    }
                }
            }
        }
        // Counting sort into compressed rows.
        let g = &mut self.grid;
        g.origin = origin;
        g.cell = cell;
        g.nx = nx;
        g.ny = ny;
        g.start.clear();
        g.start.resize((nx * ny + 1) as usize, 0);
        for (c, _) in &pairs {
            g.start[*c as usize + 1] += 1;
        }
        for i in 0..(nx * ny) as usize {
            g.start[i + 1] += g.start[i];
        }
        g.items.clear();
        g.items.resize(pairs.len(), CellItem { p: 0, lane: 0 });
        // Fill using a moving cursor per cell; `start` is restored afterwards.
        for (c, item) in &pairs {
            let slot = &mut g.start[*c as usize];
            g.items[*slot as usize] = *item;
            *slot += 1;
        }
        for i in (1..=(nx * ny) as usize).rev() {
            g.start[i] = g.start[i - 1];
        }
        g.start[0] = 0;
        self.scratch_pairs = pairs;
    }

    /// Whether `p` lies on the drivable area: within half a lane width of some lane's
    /// centreline segment (segments are capsules, so bends and lane joints have no gaps;
    /// lanes end flat where nothing continues them).
    pub fn is_drivable(&self, p: Vec2) -> bool {
        let g = &self.grid;
        let fx = (p.x - g.origin.x) / g.cell;
        let fy = (p.y - g.origin.y) / g.cell;
        if fx < 0.0 || fy < 0.0 || fx >= g.nx as f32 || fy >= g.ny as f32 {
            return false;
        }
        let c = fy as u32 * g.nx + fx as u32;
        let items = &g.items[g.start[c as usize] as usize..g.start[c as usize + 1] as usize];
        items.iter().any(|it| {
            let a = self.lines.pts[it.p as usize];
            let b = self.lines.pts[it.p as usize + 1];
            let r = 0.5 * self.lanes[it.lane as usize].width;
            let seg = b - a;
            let l2 = seg.norm_sq();
            let t = (p - a).dot(seg) / l2;
            let q = a + seg * t.clamp(0.0, 1.0);
            if (p - q).norm_sq() > r * r {
                return false;
            }
            // Open lane ends are flat: beyond the plane through the first or last point, no
            // segment's round cap counts.
            let open = self.open_ends[it.lane as usize];
            if open == 0 {
                return true;
            }
            let pts = self.lines.points(self.lanes[it.lane as usize].line);
            let n = pts.len();
            (open & 1 == 0 || (p - pts[0]).dot(pts[1] - pts[0]) >= 0.0)
                && (open & 2 == 0 || (p - pts[n - 1]).dot(pts[n - 1] - pts[n - 2]) <= 0.0)
        })
    }

    /// Approximate heap bytes held by this map (for memory reports).
    pub fn heap_bytes(&self) -> usize {
        self.lines.pts.capacity() * std::mem::size_of::<Vec2>()
            + self.lines.spans.capacity() * std::mem::size_of::<Span>()
            + self.lanes.capacity() * std::mem::size_of::<Lane>()
            + self.grid.start.capacity() * 4
            + self.grid.items.capacity() * std::mem::size_of::<CellItem>()
            + self.scratch_pairs.capacity() * std::mem::size_of::<(u32, CellItem)>()
            + self.scratch_dense.capacity() * std::mem::size_of::<Vec2>()
    }
}

/// Builds a dense centreline from a start pose and a sequence of (length, curvature) pieces:
/// straight when curvature is 0, circular arc otherwise. Points every 0.25 m.
pub fn clothoid_free_road(start: Vec2, yaw: f32, pieces: &[(f32, f32)], out: &mut Vec<Vec2>) {
    out.clear();
    let step = 0.25f32;
    let mut p = start;
    let mut h = yaw;
    out.push(p);
    for &(len, k) in pieces {
        let n = (len / step).ceil().max(1.0) as usize;
        let ds = len / n as f32;
        for _ in 0..n {
            // Exact arc integration over ds (midpoint heading is exact for chords of arcs).
            let dh = k * ds;
            let chord = if k.abs() < 1e-9 {
                ds
            } else {
                2.0 * (0.5 * dh).sin() / k
            };
            p = p + Vec2::from_angle(h + 0.5 * dh) * chord;
            h += dh;
            out.push(p);
        }
    }
}

/// Offsets a dense polyline laterally by `d` (positive left), using per-point normals.
pub fn offset_polyline(src: &[Vec2], d: f32, out: &mut Vec<Vec2>) {
    out.clear();
    let n = src.len();
    for i in 0..n {
        let a = src[i.saturating_sub(1)];
        let b = src[(i + 1).min(n - 1)];
        let t = b - a;
        let t = t * (1.0 / t.norm().max(1e-9));
        out.push(src[i] + t.perp() * d);
    }
}

/// Cubic Hermite curve from `p0` heading `h0` to `p1` heading `h1`, sampled densely: smooth
/// connectors for junctions and ramps.
pub fn hermite(p0: Vec2, h0: f32, p1: Vec2, h1: f32, out: &mut Vec<Vec2>) {
    out.clear();
    let dist = (p1 - p0).norm();
    let m0 = Vec2::from_angle(h0) * dist;
    let m1 = Vec2::from_angle(h1) * dist;
    let n = (dist / 0.25).ceil().max(2.0) as usize;
    for i in 0..=n {
        let t = i as f32 / n as f32;
        let t2 = t * t;
        let t3 = t2 * t;
        let h00 = 2.0 * t3 - 3.0 * t2 + 1.0;
        let h10 = t3 - 2.0 * t2 + t;
        let h01 = -2.0 * t3 + 3.0 * t2;
        let h11 = t3 - t2;
        out.push(p0 * h00 + m0 * h10 + p1 * h01 + m1 * h11);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn straight_map(width: f32) -> RoadMap {
        let mut m = RoadMap::default();
        let pts: Vec<Vec2> = (0..=40).map(|i| Vec2::new(i as f32 * 2.5, 0.0)).collect();
        m.add_lane(&pts, width, 10.0);
        m.build_index();
        m
    }

    #[test]
    fn resampling_is_uniform_and_keeps_length() {
        let mut dense = Vec::new();
        clothoid_free_road(Vec2::ZERO, 0.0, &[(10.5, 0.0), (31.4159, 0.05)], &mut dense);
        let mut store = Polylines::default();
        let id = store.push_resampled(&dense);
        let pts = store.points(id);
        for w in pts.windows(2).take(pts.len() - 2) {
            // Chords of a gentle arc are within 1e-3 of the arc spacing.
            assert!(((w[1] - w[0]).norm() - SPACING).abs() < 2e-3);
        }
        assert!(
            (store.length(id) - 41.9159).abs() < 0.02,
            "{}",
            store.length(id)
        );
        // A quarter of an arc of radius 20 turns heading by 31.4159 * 0.05 = pi/2.
        let (_, t_end) = store.sample(id, store.length(id));
        assert!((t_end.y - 1.0).abs() < 1e-3, "{t_end:?}");
    }

    #[test]
    fn project_recovers_offset_on_arc() {
        let mut dense = Vec::new();
        clothoid_free_road(Vec2::ZERO, 0.0, &[(60.0, 1.0 / 30.0)], &mut dense);
        let mut store = Polylines::default();
        let id = store.push_resampled(&dense);
        // A point 1.2 m to the left of the curve at s = 25.
        let (q, t) = store.sample(id, 25.0);
        let p = q + t.perp() * 1.2;
        let (s, lat, _) = store.project(id, p, 22.0);
        assert!((s - 25.0).abs() < 0.05, "{s}");
        assert!((lat - 1.2).abs() < 0.02, "{lat}");
    }

    #[test]
    fn offroad_corner_cases_straight_lane() {
        let m = straight_map(3.5);
        // Inside, on the edge, just outside laterally.
        assert!(m.is_drivable(Vec2::new(50.0, 0.0)));
        assert!(m.is_drivable(Vec2::new(50.0, 1.75)));
        assert!(!m.is_drivable(Vec2::new(50.0, 1.76)));
        assert!(!m.is_drivable(Vec2::new(50.0, -1.76)));
        // Lane ends flat: just before the start and past the end are off-road even on the axis.
        assert!(m.is_drivable(Vec2::new(0.0, 1.0)));
        assert!(!m.is_drivable(Vec2::new(-0.01, 0.0)));
        assert!(!m.is_drivable(Vec2::new(100.01, 0.0)));
        // Far away, outside the grid.
        assert!(!m.is_drivable(Vec2::new(-500.0, 300.0)));
    }

    #[test]
    fn offroad_outer_side_of_bend_has_no_gaps() {
        // On the outside of a sharp arc, consecutive segment rectangles leave wedge gaps; the
        // capsule test must cover them. Sample densely along the outer edge just inside.
        let mut m = RoadMap::default();
        let mut dense = Vec::new();
        clothoid_free_road(
            Vec2::ZERO,
            0.0,
            &[(10.0, 0.0), (30.0, 1.0 / 15.0), (10.0, 0.0)],
            &mut dense,
        );
        let lane = m.add_lane(&dense, 3.5, 10.0);
        m.build_index();
        let line = m.lanes[lane as usize].line;
        let len = m.lines.length(line);
        let mut s = 0.5;
        while s < len - 0.5 {
            let (q, t) = m.lines.sample(line, s);
            // Outer edge is to the right for a left-turning arc.
            assert!(m.is_drivable(q - t.perp() * 1.70), "gap at s={s}");
            assert!(!m.is_drivable(q - t.perp() * 1.85), "leak at s={s}");
            s += 0.1;
        }
    }

    #[test]
    fn joint_between_linked_lanes_has_no_gap_but_open_ends_are_flat() {
        // Two lanes meeting at (20, 0) with a 20-degree kink: the outer side of the joint is
        // covered only if the connected ends are not cut flat.
        let mut m = RoadMap::default();
        let a: Vec<Vec2> = (0..=20).map(|i| Vec2::new(i as f32, 0.0)).collect();
        let dir = Vec2::from_angle(0.35);
        let b: Vec<Vec2> = (0..=20)
            .map(|i| Vec2::new(20.0, 0.0) + dir * i as f32)
            .collect();
        let la = m.add_lane(&a, 3.5, 10.0);
        let lb = m.add_lane(&b, 3.5, 10.0);
        m.link(la, lb);
        m.build_index();
        // Just inside the outer (right) edge at the joint, in the wedge between the two lanes.
        let wedge =
            Vec2::new(20.0, 0.0) + Vec2::from_angle(-std::f32::consts::FRAC_PI_2 + 0.17) * 1.7;
        assert!(m.is_drivable(wedge));
        assert!(!m.is_drivable(Vec2::new(20.0, -1.8)));
        // The open ends stay flat.
        assert!(!m.is_drivable(Vec2::new(-0.05, 0.0)));
        assert!(!m.is_drivable(Vec2::new(20.0, 0.0) + dir * 20.05));
    }

    #[test]
    fn path_concatenates_lanes_and_stops() {
        let mut m = RoadMap::default();
        let a: Vec<Vec2> = (0..=20).map(|i| Vec2::new(i as f32, 0.0)).collect();
        let b: Vec<Vec2> = (20..=50).map(|i| Vec2::new(i as f32, 0.0)).collect();
        let la = m.add_lane(&a, 3.5, 10.0);
        let lb = m.add_lane(&b, 3.5, 10.0);
        m.link(la, lb);
        let p = m.add_path(&[la, lb], &[Some(0), None]);
        assert!((m.path_length(p) - 50.0).abs() < 1e-3);
        assert_eq!(m.path_stops(p).len(), 1);
        assert!((m.path_stops(p)[0].s - 20.0).abs() < 1e-3);
        assert_eq!(m.lane_at(p, 19.9), la);
        assert_eq!(m.lane_at(p, 20.1), lb);
    }
}
