//! Scenario generation: the five families, built deterministically from a [`ScenarioSpec`]
//! into a [`Scenario`] value (map, traffic, lights, obstacles, the ego's start and its route)
//! that a `World` is reset from.

use crate::config::SimConfig;
use crate::geom::{OrientedBox, Vec2};
use crate::road::{clothoid_free_road, hermite, offset_polyline, LaneId, RoadMap};
use crate::spec::{Difficulty, Family, ScenarioSpec};
use crate::traffic::{Agent, Behaviour, Idm, TrafficLight};
use crate::vehicle::BicycleState;
use deltaplan_stdx::seed;
use rand::RngExt;
use rand_pcg::Pcg64;
use std::f32::consts::{FRAC_PI_2, PI};

/// A generated scenario: everything a world is reset from. A pure function of its spec and
/// the simulation config: generating twice gives the same value, bit for bit.
#[derive(Clone, Debug, Default)]
pub struct Scenario {
    pub spec: ScenarioSpec,
    pub map: RoadMap,
    pub lights: Vec<TrafficLight>,
    pub agents: Vec<Agent>,
    pub statics: Vec<OrientedBox>,
    /// The ego's initial state.
    pub ego: BicycleState,
    /// Path index of the ego route.
    pub route: usize,
    /// Route length up to the finish line ([`ROUTE_END_MARGIN`] before the end of the mapped
    /// road), metres.
    pub route_len: f32,
    /// Where a main road merges into the ego route (merge family only).
    pub merge: Option<MergeLink>,
    pub time_limit_steps: u32,
}

/// Links a path that merges into the ego route: positions on `main_path` map to the ego route
/// by `s_route = s_main - s_main_merge + s_route_merge`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MergeLink {
    pub main_path: u16,
    pub s_main_merge: f32,
    pub s_route_merge: f32,
}

impl MergeLink {
    /// How far past its merge point a merge still concerns the ego (the expert, the reward and
    /// the observation stop looking at the merging road there), metres.
    pub const PAST: f32 = 5.0;

    /// How far the ego at `route_s` is ahead of a vehicle at `main_s` on the main path once
    /// that is mapped onto the route (centre to centre, metres; negative: behind it).
    pub fn ego_ahead_by(&self, route_s: f32, main_s: f32) -> f32 {
        route_s - (main_s - self.s_main_merge + self.s_route_merge)
    }
}

/// The route's finish line lies this far before the end of its last lane, so a vehicle that
/// finishes at speed never drives off the end of the mapped road.
pub const ROUTE_END_MARGIN: f32 = 15.0;

impl Scenario {
    /// Generates the scenario of `spec` for a simulation with `cfg` (its step length sets the
    /// time limit in steps, its vehicle the ego's placement).
    pub fn generate(spec: ScenarioSpec, cfg: &SimConfig) -> Scenario {
        let mut scenario = Scenario::default();
        scenario.regenerate(spec, cfg);
        scenario
    }

    /// Same as [`Scenario::generate`], into this value: its map, traffic and obstacle buffers
    /// are cleared and reused, so resetting a world does not grow the heap.
    pub fn regenerate(&mut self, spec: ScenarioSpec, cfg: &SimConfig) {
        self.spec = spec;
        self.map.clear();
        self.lights.clear();
        self.agents.clear();
        self.statics.clear();
        self.ego = BicycleState::default();
        self.route = 0;
        self.route_len = 0.0;
        self.merge = None;
        self.time_limit_steps = 0;
        let mut rng = seed::rng(spec.seed, seed::GOLDEN_GAMMA);
        // Decorrelate families that share a seed index.
        for _ in 0..(spec.family as u32) {
            let _: u64 = rng.random();
        }
        let mut b = Builder {
            sc: self,
            cfg,
            rng,
            dense: Vec::new(),
            dense2: Vec::new(),
            d: spec.difficulty,
        };
        match spec.family {
            Family::Curvy => curvy(&mut b),
            Family::HardBrake => hard_brake(&mut b),
            Family::CutIn => cut_in(&mut b),
            Family::Intersection => intersection(&mut b),
            Family::Merge => merge(&mut b),
        }
        self.map.build_index();
    }
}

const LANE_WIDTH: f32 = 3.5;

struct Builder<'a> {
    sc: &'a mut Scenario,
    cfg: &'a SimConfig,
    rng: Pcg64,
    dense: Vec<Vec2>,
    dense2: Vec<Vec2>,
    d: Difficulty,
}

impl Builder<'_> {
    fn u(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.rng.random::<f32>()
    }

    fn lerp(a: f32, b: f32, t: f32) -> f32 {
        a + (b - a) * t
    }

    fn idm(&mut self, v0: f32) -> Idm {
        let agg = self.d.aggressiveness;
        Idm {
            v0,
            headway: self.u(1.0, 1.8) * (1.0 - 0.3 * agg),
            s0: 2.0,
            a_max: self.u(1.2, 2.0),
            b: 2.0,
        }
    }

    fn agent(&mut self, path: usize, s: f32, v: f32, v0: f32, behaviour: Behaviour) -> usize {
        let idm = self.idm(v0);
        let length = self.u(4.2, 5.0);
        let width = self.u(1.8, 2.0);
        let d = match behaviour {
            Behaviour::CutIn { d_from, .. } => d_from,
            _ => 0.0,
        };
        self.sc.agents.push(Agent {
            path: path as u16,
            s,
            d,
            v,
            accel: 0.0,
            length,
            width,
            idm,
            behaviour,
            yields_to_ego: true,
            active: true,
            pos: Vec2::ZERO,
            heading: Vec2::new(1.0, 0.0),
        });
        self.sc.agents.len() - 1
    }

    /// Fills a path with IDM traffic at the configured density, keeping `keep_clear` (an
    /// interval of arc length) free, spacing at least 14 m.
    fn populate(
        &mut self,
        path: usize,
        s_from: f32,
        s_to: f32,
        density: f32,
        v_frac: (f32, f32),
        keep_clear: (f32, f32),
    ) {
        let len = s_to - s_from;
        if len <= 0.0 {
            return;
        }
        let n = (density * len / 100.0).round() as usize;
        let mut s = s_from + self.u(0.0, 10.0);
        let mean_gap = (len / n.max(1) as f32).max(14.0);
        for _ in 0..n {
            if s > s_to - 5.0 {
                break;
            }
            if !(keep_clear.0..=keep_clear.1).contains(&s) {
                let lane = self.sc.map.lane_at(path, s);
                let limit = self.sc.map.lanes[lane as usize].speed_limit;
                let v0 = limit * self.u(v_frac.0, v_frac.1);
                self.agent(path, s, v0 * 0.9, v0, Behaviour::Idm);
            }
            s += 14.0 + self.u(0.0, 2.0 * (mean_gap - 14.0));
        }
    }

    /// Parallel lanes along the dense reference `self.dense`, ordered left to right.
    fn parallel_lanes(&mut self, n: usize, limit: f32) -> Vec<LaneId> {
        let reference = std::mem::take(&mut self.dense);
        let mut lanes = Vec::with_capacity(n);
        for k in 0..n {
            let offset = ((n as f32 - 1.0) * 0.5 - k as f32) * LANE_WIDTH;
            offset_polyline(&reference, offset, &mut self.dense2);
            lanes.push(self.sc.map.add_lane(&self.dense2, LANE_WIDTH, limit));
        }
        for k in 1..n {
            self.sc.map.set_neighbours(lanes[k - 1], lanes[k]);
        }
        self.dense = reference;
        lanes
    }

    /// Places the ego on its route at arc length `s` with a small pose perturbation.
    fn place_ego(&mut self, s: f32, v: f32) {
        let line = self.sc.map.paths[self.sc.route].line;
        let (q, t) = self.sc.map.lines.sample(line, s);
        let lat = self.u(-0.3, 0.3);
        let yaw = t.y.atan2(t.x) + self.u(-0.03, 0.03);
        let center = q + t.perp() * lat;
        let rc = self.cfg.vehicle.rear_to_center;
        self.sc.ego = BicycleState {
            pos: center - Vec2::from_angle(yaw) * rc,
            yaw,
            v,
            ..Default::default()
        };
    }

    fn road_pieces(&mut self, total: f32, r_min: f32, max_angle: f32) -> Vec<(f32, f32)> {
        let mut pieces = vec![(30.0, 0.0)];
        let mut len = 30.0;
        let mut sign = if self.rng.random::<bool>() { 1.0 } else { -1.0 };
        while len < total {
            let r = self.u(r_min, r_min * 2.5);
            let angle = self.u(0.3, max_angle);
            pieces.push((r * angle, sign / r));
            len += r * angle;
            let straight = self.u(10.0, 40.0);
            pieces.push((straight, 0.0));
            len += straight;
            sign = -sign;
        }
        pieces.push((40.0, 0.0));
        pieces
    }
}

/// Sets the route length and the time limit: the route at 40 % of its first lane's speed
/// limit, plus `extra_seconds`.
fn time_limit(b: &mut Builder, extra_seconds: f32) {
    let sc = &mut *b.sc;
    sc.route_len = sc.map.path_length(sc.route) - ROUTE_END_MARGIN;
    let lane = sc.map.lane_at(sc.route, 0.0);
    let limit = sc.map.lanes[lane as usize].speed_limit;
    let seconds = sc.route_len / (0.4 * limit) + extra_seconds;
    sc.time_limit_steps = (seconds / b.cfg.dt).ceil() as u32;
}

fn curvy(b: &mut Builder) {
    let r_min = Builder::lerp(150.0, 25.0, b.d.curvature);
    let pieces = b.road_pieces(260.0, r_min, Builder::lerp(0.8, 1.6, b.d.curvature));
    let yaw0 = b.u(-PI, PI);
    clothoid_free_road(Vec2::ZERO, yaw0, &pieces, &mut b.dense);
    let n = if b.rng.random::<bool>() { 2 } else { 3 };
    let limit = 16.7 * b.d.speed;
    let lanes = b.parallel_lanes(n, limit);
    let paths: Vec<usize> = lanes
        .iter()
        .map(|&l| b.sc.map.add_path(&[l], &[None]))
        .collect();
    let ego_lane = b.rng.random_range(0..n);
    b.sc.route = paths[ego_lane];
    let s0 = 20.0;
    for (k, &p) in paths.iter().enumerate() {
        let len = b.sc.map.path_length(p);
        let clear = if k == ego_lane {
            (s0 - 20.0, s0 + 25.0)
        } else {
            (s0 - 8.0, s0 + 8.0)
        };
        b.populate(p, 0.0, len, b.d.traffic_density, (0.6, 0.95), clear);
    }
    // Barriers on the outside of sharp bends, just beyond the road edge.
    let mut s = 0.0;
    let half_road = 0.5 * n as f32 * LANE_WIDTH;
    for &(len, k) in &pieces {
        if k.abs() > 1.0 / 60.0 {
            let mid = s + 0.5 * len;
            // Sample the reference line (kept in b.dense) at arc length `mid`.
            let idx = ((mid / 0.25) as usize).min(b.dense.len() - 2);
            let q = b.dense[idx];
            let t = b.dense[idx + 1] - q;
            let t = t * (1.0 / t.norm());
            let outside = if k > 0.0 { -t.perp() } else { t.perp() };
            let c = q + outside * (half_road + 1.2);
            b.sc.statics
                .push(OrientedBox::new(c, t.y.atan2(t.x), 6.0, 0.8));
        }
        s += len;
    }
    let v = b.u(0.5, 0.8) * limit;
    b.place_ego(s0, v);
    time_limit(b, 10.0);
}

fn straight_ish_road(b: &mut Builder, n: usize, limit: f32) -> Vec<usize> {
    let r_min = Builder::lerp(600.0, 150.0, b.d.curvature);
    let pieces = b.road_pieces(200.0, r_min, 0.5);
    let yaw0 = b.u(-PI, PI);
    clothoid_free_road(Vec2::ZERO, yaw0, &pieces, &mut b.dense);
    let lanes = b.parallel_lanes(n, limit);
    lanes
        .iter()
        .map(|&l| b.sc.map.add_path(&[l], &[None]))
        .collect()
}

fn hard_brake(b: &mut Builder) {
    let limit = 19.4 * b.d.speed;
    let paths = straight_ish_road(b, 2, limit);
    let ego_lane = b.rng.random_range(0..2);
    b.sc.route = paths[ego_lane];
    let s0 = 15.0;
    let v = b.u(0.65, 0.85) * limit;
    let agg = b.d.aggressiveness;
    let gap = b.u(22.0, 34.0) - 6.0 * agg;
    let at = b.u(3.0, 7.0);
    let decel = Builder::lerp(4.5, 7.5, agg) + b.u(-0.5, 0.5);
    let v_min = b.u(0.0, 4.0) * (1.0 - agg);
    let hold = (v - v_min) / decel + b.u(2.0, 4.0);
    let lead_s = s0 + gap + 4.6;
    let lead = b.agent(
        b.sc.route,
        lead_s,
        v,
        v,
        Behaviour::HardBrake {
            at,
            decel,
            v_min,
            hold,
        },
    );
    b.sc.agents[lead].idm.headway = 1.2;
    let len = b.sc.map.path_length(b.sc.route);
    b.populate(
        b.sc.route,
        lead_s + 30.0,
        len,
        b.d.traffic_density * 0.5,
        (0.8, 1.0),
        (0.0, 0.0),
    );
    let other = paths[1 - ego_lane];
    let olen = b.sc.map.path_length(other);
    b.populate(
        other,
        0.0,
        olen,
        b.d.traffic_density,
        (0.6, 1.0),
        (s0 - 8.0, s0 + 8.0),
    );
    b.place_ego(s0, v);
    time_limit(b, 15.0);
}

fn cut_in(b: &mut Builder) {
    let limit = 19.4 * b.d.speed;
    let n = if b.rng.random::<bool>() { 2 } else { 3 };
    let paths = straight_ish_road(b, n, limit);
    let ego_lane = b.rng.random_range(0..n);
    b.sc.route = paths[ego_lane];
    let s0 = 15.0;
    let agg = b.d.aggressiveness;
    let v = b.u(0.65, 0.85) * limit;
    let v_cut = v * b.u(0.75, 0.95);
    let at = b.u(1.5, 4.0);
    // Lane to cut in from: left (d > 0) or right neighbour.
    let from_left = if ego_lane == 0 {
        false
    } else if ego_lane == n - 1 {
        true
    } else {
        b.rng.random::<bool>()
    };
    let d_from = if from_left { LANE_WIDTH } else { -LANE_WIDTH };
    let gap_at_cut = Builder::lerp(14.0, 7.0, agg) + b.u(0.0, 8.0);
    let cut_s = s0 + 4.6 + gap_at_cut + (v - v_cut) * at;
    let duration = Builder::lerp(3.0, 1.6, agg) + b.u(0.0, 0.5);
    b.agent(
        b.sc.route,
        cut_s,
        v_cut,
        v_cut,
        Behaviour::CutIn {
            at,
            duration,
            d_from,
            d_to: 0.0,
        },
    );
    let len = b.sc.map.path_length(b.sc.route);
    b.populate(
        b.sc.route,
        cut_s + 35.0,
        len,
        b.d.traffic_density * 0.5,
        (0.85, 1.0),
        (0.0, 0.0),
    );
    for (k, &p) in paths.iter().enumerate() {
        if k == ego_lane {
            continue;
        }
        let plen = b.sc.map.path_length(p);
        let adjacent = (k as isize - ego_lane as isize).abs() == 1;
        let clear = if adjacent {
            (s0 - 10.0, cut_s + 25.0)
        } else {
            (s0 - 8.0, s0 + 8.0)
        };
        b.populate(p, 0.0, plen, b.d.traffic_density, (0.6, 1.0), clear);
    }
    b.place_ego(s0, v);
    time_limit(b, 15.0);
}

fn intersection(b: &mut Builder) {
    let limit = 13.9 * b.d.speed;
    let arm_len = 90.0;
    let j = LANE_WIDTH + 4.0;
    let w = LANE_WIDTH;
    let mut incoming = [0 as LaneId; 4];
    let mut outgoing = [0 as LaneId; 4];
    for k in 0..4 {
        let th = k as f32 * FRAC_PI_2;
        let u = Vec2::from_angle(th);
        let n = u.perp();
        b.dense.clear();
        b.dense.push(u * (arm_len + j) + n * (0.5 * w));
        b.dense.push(u * j + n * (0.5 * w));
        incoming[k] = b.sc.map.add_lane(&b.dense, w, limit);
        b.dense.clear();
        b.dense.push(u * j - n * (0.5 * w));
        b.dense.push(u * (arm_len + j) - n * (0.5 * w));
        outgoing[k] = b.sc.map.add_lane(&b.dense, w, limit);
    }
    // Connectors: conn[k][m] from incoming arm k to outgoing arm m.
    let mut conn = [[0 as LaneId; 4]; 4];
    for k in 0..4 {
        for m in 0..4 {
            if m == k {
                continue;
            }
            let uk = Vec2::from_angle(k as f32 * FRAC_PI_2);
            let um = Vec2::from_angle(m as f32 * FRAC_PI_2);
            let p0 = uk * j + uk.perp() * (0.5 * w);
            let p1 = um * j - um.perp() * (0.5 * w);
            hermite(
                p0,
                k as f32 * FRAC_PI_2 + PI,
                p1,
                m as f32 * FRAC_PI_2,
                &mut b.dense,
            );
            conn[k][m] = b.sc.map.add_lane(&b.dense, w, limit);
            b.sc.map.link(incoming[k], conn[k][m]);
            b.sc.map.link(conn[k][m], outgoing[m]);
        }
    }
    // Exclusive phases: each approach in turn, with an all-red clearance.
    let (green, yellow, all_red) = (7.0, 3.0, 1.5);
    let slot = green + yellow + all_red;
    let cycle = 4.0 * slot;
    let offset0 = b.u(0.0, cycle);
    for k in 0..4 {
        let uk = Vec2::from_angle(k as f32 * FRAC_PI_2);
        b.sc.lights.push(TrafficLight {
            pos: uk * j + uk.perp() * (0.5 * w),
            heading: -uk,
            offset: (offset0 - k as f32 * slot).rem_euclid(cycle),
            green,
            yellow,
            cycle,
        });
    }
    let path_for = |b: &mut Builder, k: usize, m: usize| {
        b.sc.map.add_path(
            &[incoming[k], conn[k][m], outgoing[m]],
            &[Some(k as u16), None, None],
        )
    };
    // Ego from the south arm (k = 3): straight (to 1), left (to 2) or right (to 0).
    let turn = b.rng.random_range(0..4);
    let m = match turn {
        0 | 1 => 1,
        2 => 2,
        _ => 0,
    };
    b.sc.route = path_for(b, 3, m);
    let s0 = b.u(15.0, 40.0);
    // Traffic on every approach, with random turns; on the ego's approach keep clear.
    for (k, &out_lane) in outgoing.iter().enumerate() {
        let mk = [(k + 2) % 4, (k + 1) % 4, (k + 3) % 4, (k + 2) % 4][b.rng.random_range(0..4)];
        let p = path_for(b, k, mk);
        let clear = if k == 3 {
            (s0 - 15.0, s0 + 15.0)
        } else {
            (-1.0, -1.0)
        };
        b.populate(
            p,
            0.0,
            arm_len - 5.0,
            b.d.traffic_density,
            (0.7, 1.0),
            clear,
        );
        // Some vehicles already leaving on the outgoing lane.
        let out_path = b.sc.map.add_path(&[out_lane], &[None]);
        b.populate(
            out_path,
            0.0,
            arm_len,
            b.d.traffic_density * 0.5,
            (0.8, 1.0),
            (-1.0, -1.0),
        );
    }
    let v = b.u(0.5, 0.8) * limit;
    b.place_ego(s0, v);
    time_limit(b, cycle);
}

fn merge(b: &mut Builder) {
    let limit = 19.4 * b.d.speed;
    let w = LANE_WIDTH;
    let road_len = 380.0;
    let x_acc_start = 130.0;
    let x_taper = b.u(190.0, 230.0);
    let x_merge = x_taper + 60.0;
    let line = |b: &mut Builder, x0: f32, x1: f32, y: f32| {
        b.dense.clear();
        b.dense.push(Vec2::new(x0, y));
        b.dense.push(Vec2::new(x1, y));
    };
    line(b, 0.0, road_len, 0.5 * w);
    let left = b.sc.map.add_lane(&b.dense, w, limit);
    line(b, 0.0, x_merge, -0.5 * w);
    let right_a = b.sc.map.add_lane(&b.dense, w, limit);
    line(b, x_merge, road_len, -0.5 * w);
    let right_b = b.sc.map.add_lane(&b.dense, w, limit);
    b.sc.map.link(right_a, right_b);
    b.sc.map.set_neighbours(left, right_a);
    b.sc.map.set_neighbours(left, right_b);
    // On-ramp from below, then a parallel acceleration lane, then a taper into the right lane.
    hermite(
        Vec2::new(x_acc_start - 110.0, -1.5 * w - 30.0),
        0.35,
        Vec2::new(x_acc_start, -1.5 * w),
        0.0,
        &mut b.dense,
    );
    let ramp = b.sc.map.add_lane(&b.dense, w, 0.8 * limit);
    line(b, x_acc_start, x_taper, -1.5 * w);
    let accel_lane = b.sc.map.add_lane(&b.dense, w, limit);
    hermite(
        Vec2::new(x_taper, -1.5 * w),
        0.0,
        Vec2::new(x_merge, -0.5 * w),
        0.0,
        &mut b.dense,
    );
    let taper = b.sc.map.add_lane(&b.dense, w, limit);
    b.sc.map.link(ramp, accel_lane);
    b.sc.map.link(accel_lane, taper);
    b.sc.map.link(taper, right_b);
    b.sc.map.set_neighbours(right_a, accel_lane);
    b.sc.route =
        b.sc.map
            .add_path(&[ramp, accel_lane, taper, right_b], &[None; 4]);
    let main = b.sc.map.add_path(&[right_a, right_b], &[None, None]);
    let left_path = b.sc.map.add_path(&[left], &[None]);
    let route_lanes = b.sc.map.path_lanes(b.sc.route);
    let s_route_merge = route_lanes[3].s_start;
    b.sc.merge = Some(MergeLink {
        main_path: main as u16,
        s_main_merge: x_merge,
        s_route_merge,
    });
    let density = (b.d.traffic_density * 1.5).min(5.0);
    b.populate(main, 0.0, road_len, density, (0.6, 0.9), (-1.0, -1.0));
    b.populate(left_path, 0.0, road_len, density, (0.7, 1.0), (-1.0, -1.0));
    let polite = Builder::lerp(0.9, 0.3, b.d.aggressiveness);
    for i in 0..b.sc.agents.len() {
        b.sc.agents[i].yields_to_ego = b.rng.random::<f32>() < polite;
    }
    let v = b.u(0.5, 0.7) * limit;
    b.place_ego(10.0, v);
    time_limit(b, 20.0);
}
