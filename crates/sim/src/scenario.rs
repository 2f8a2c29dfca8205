//! Scenario families, their difficulty knobs, the train/eval/hard seed splits, and the
//! deterministic generator that builds a [`World`] from a [`ScenarioSpec`].

use crate::geom::{OrientedBox, Vec2};
use crate::road::{clothoid_free_road, hermite, offset_polyline, LaneId};
use crate::traffic::{Agent, Behaviour, Idm, TrafficLight};
use crate::vehicle::BicycleState;
use crate::world::{MergeLink, World};
use rand::{RngExt, SeedableRng};
use rand_pcg::Pcg64;
use serde::{Deserialize, Serialize};
use std::f32::consts::{FRAC_PI_2, PI};

/// The scenario families.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// Curvy multi-lane road with sharp bends and traffic.
    #[default]
    Curvy,
    /// Car following behind a lead vehicle that brakes hard.
    HardBrake,
    /// A vehicle from an adjacent lane cuts in ahead of the ego.
    CutIn,
    /// Signalised 4-way intersection with crossing traffic; the route goes straight or turns.
    Intersection,
    /// Merge from an on-ramp onto a busier road.
    Merge,
}

impl Family {
    pub const ALL: [Family; 5] = [
        Family::Curvy,
        Family::HardBrake,
        Family::CutIn,
        Family::Intersection,
        Family::Merge,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Family::Curvy => "curvy",
            Family::HardBrake => "hard_brake",
            Family::CutIn => "cut_in",
            Family::Intersection => "intersection",
            Family::Merge => "merge",
        }
    }
}

/// Difficulty knobs shared by all families.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Difficulty {
    /// Vehicles per 100 m of lane.
    pub traffic_density: f32,
    /// 0 = gentle bends (minimum radius 150 m), 1 = sharpest (minimum radius 25 m).
    pub curvature: f32,
    /// Scale on speed limits.
    pub speed: f32,
    /// 0 = mild (soft braking, late and slow cut-ins, polite drivers), 1 = aggressive.
    pub aggressiveness: f32,
}

impl Default for Difficulty {
    fn default() -> Self {
        Difficulty {
            traffic_density: 1.5,
            curvature: 0.6,
            speed: 1.0,
            aggressiveness: 0.4,
        }
    }
}

/// A difficulty knob outside its allowed range.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("scenario field `{field}` = {value} is out of range: allowed {min} to {max}")]
pub struct RangeError {
    pub field: &'static str,
    pub value: f32,
    pub min: f32,
    pub max: f32,
}

impl Difficulty {
    /// Allowed ranges, by field name.
    pub const RANGES: [(&'static str, f32, f32); 4] = [
        ("traffic_density", 0.0, 5.0),
        ("curvature", 0.0, 1.0),
        ("speed", 0.5, 1.5),
        ("aggressiveness", 0.0, 1.0),
    ];

    /// Checks every field against [`Difficulty::RANGES`]; NaN is out of every range.
    pub fn validate(&self) -> Result<(), RangeError> {
        let values = [
            self.traffic_density,
            self.curvature,
            self.speed,
            self.aggressiveness,
        ];
        for ((field, min, max), value) in Self::RANGES.into_iter().zip(values) {
            if !(min..=max).contains(&value) {
                return Err(RangeError {
                    field,
                    value,
                    min,
                    max,
                });
            }
        }
        Ok(())
    }

    /// Interpolates every knob: `t = 0` gives `self`, `t = 1` gives `other`.
    pub fn lerp(&self, other: &Difficulty, t: f32) -> Difficulty {
        let l = |a: f32, b: f32| a + (b - a) * t;
        Difficulty {
            traffic_density: l(self.traffic_density, other.traffic_density),
            curvature: l(self.curvature, other.curvature),
            speed: l(self.speed, other.speed),
            aggressiveness: l(self.aggressiveness, other.aggressiveness),
        }
    }

    /// The range training draws from: from `self` up to `mix` of the way to [`Self::harder`].
    pub fn training_range(&self, mix: f32) -> (Difficulty, Difficulty) {
        (*self, self.lerp(&self.harder(), mix))
    }

    /// The harder evaluation split's difficulty derived from a base.
    pub fn harder(&self) -> Difficulty {
        Difficulty {
            traffic_density: (self.traffic_density * 1.5).min(5.0),
            curvature: (self.curvature + 0.3).min(1.0),
            speed: (self.speed * 1.1).min(1.5),
            aggressiveness: (self.aggressiveness + 0.4).min(1.0),
        }
    }
}

/// Everything that determines a scenario: generating twice from the same spec gives the
/// same world, bit for bit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ScenarioSpec {
    pub family: Family,
    pub seed: u64,
    pub difficulty: Difficulty,
}

/// Disjoint seed ranges for training and the two evaluation splits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    Train,
    Eval,
    Hard,
}

impl Split {
    /// First seed of the split; each split owns `SPLIT_SIZE` seeds.
    pub fn seed_base(self) -> u64 {
        match self {
            Split::Train => 0,
            Split::Eval => 1 << 40,
            Split::Hard => 2 << 40,
        }
    }

    pub const SPLIT_SIZE: u64 = 1 << 40;

    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Eval => "eval",
            Split::Hard => "hard",
        }
    }

    /// Whether a seed belongs to this split.
    pub fn contains(self, seed: u64) -> bool {
        (self.seed_base()..self.seed_base() + Self::SPLIT_SIZE).contains(&seed)
    }

    /// The fixed evaluation suite of this split: `per_family` scenarios of every family in
    /// `families`, with the split's difficulty (the hard split makes `base` harder).
    pub fn suite(
        self,
        families: &[Family],
        per_family: usize,
        base: Difficulty,
    ) -> Vec<ScenarioSpec> {
        let difficulty = match self {
            Split::Hard => base.harder(),
            _ => base,
        };
        let mut out = Vec::with_capacity(families.len() * per_family);
        for (fi, &family) in families.iter().enumerate() {
            for k in 0..per_family {
                out.push(ScenarioSpec {
                    family,
                    seed: self.seed_base() + (fi * 1_000_003 + k) as u64,
                    difficulty,
                });
            }
        }
        out
    }
}

const LANE_WIDTH: f32 = 3.5;

struct Builder<'a> {
    w: &'a mut World,
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
        self.w.agents.push(Agent {
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
        self.w.agents.len() - 1
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
                let lane = self.w.map.lane_at(path, s);
                let limit = self.w.map.lanes[lane as usize].speed_limit;
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
            lanes.push(self.w.map.add_lane(&self.dense2, LANE_WIDTH, limit));
        }
        for k in 1..n {
            self.w.map.set_neighbours(lanes[k - 1], lanes[k]);
        }
        self.dense = reference;
        lanes
    }

    /// Places the ego on its route at arc length `s` with a small pose perturbation.
    fn place_ego(&mut self, s: f32, v: f32) {
        let line = self.w.map.paths[self.w.route].line;
        let (q, t) = self.w.map.lines.sample(line, s);
        let lat = self.u(-0.3, 0.3);
        let yaw = t.y.atan2(t.x) + self.u(-0.03, 0.03);
        let center = q + t.perp() * lat;
        let rc = self.w.cfg.vehicle.rear_to_center;
        self.w.ego = BicycleState {
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

/// Fills `world` from `spec`. Called by [`World::reset`].
pub(crate) fn build(world: &mut World, spec: ScenarioSpec) {
    world.spec = spec;
    world.map.clear();
    world.lights.clear();
    world.agents.clear();
    world.statics.clear();
    world.merge = None;
    let mut rng = Pcg64::seed_from_u64(spec.seed ^ 0x9E37_79B9_7F4A_7C15);
    // Decorrelate families that share a seed index.
    for _ in 0..(spec.family as u32) {
        let _: u64 = rng.random();
    }
    let mut b = Builder {
        w: world,
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
    let rng = b.rng;
    world.rng = rng;
    world.map.build_index();
    world.stats.route_length = world.route_len;
}

/// The route's finish line lies this far before the end of its last lane, so a vehicle that
/// finishes at speed never drives off the end of the mapped road.
pub const ROUTE_END_MARGIN: f32 = 15.0;

fn time_limit(w: &mut World, extra_seconds: f32) {
    w.route_len = w.map.path_length(w.route) - ROUTE_END_MARGIN;
    let lane = w.map.lane_at(w.route, 0.0);
    let limit = w.map.lanes[lane as usize].speed_limit;
    let seconds = w.route_len / (0.4 * limit) + extra_seconds;
    w.time_limit_steps = (seconds / w.cfg.dt).ceil() as u32;
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
        .map(|&l| b.w.map.add_path(&[l], &[None]))
        .collect();
    let ego_lane = b.rng.random_range(0..n);
    b.w.route = paths[ego_lane];
    let s0 = 20.0;
    for (k, &p) in paths.iter().enumerate() {
        let len = b.w.map.path_length(p);
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
            b.w.statics
                .push(OrientedBox::new(c, t.y.atan2(t.x), 6.0, 0.8));
        }
        s += len;
    }
    let v = b.u(0.5, 0.8) * limit;
    b.place_ego(s0, v);
    time_limit(b.w, 10.0);
}

fn straight_ish_road(b: &mut Builder, n: usize, limit: f32) -> Vec<usize> {
    let r_min = Builder::lerp(600.0, 150.0, b.d.curvature);
    let pieces = b.road_pieces(200.0, r_min, 0.5);
    let yaw0 = b.u(-PI, PI);
    clothoid_free_road(Vec2::ZERO, yaw0, &pieces, &mut b.dense);
    let lanes = b.parallel_lanes(n, limit);
    lanes
        .iter()
        .map(|&l| b.w.map.add_path(&[l], &[None]))
        .collect()
}

fn hard_brake(b: &mut Builder) {
    let limit = 19.4 * b.d.speed;
    let paths = straight_ish_road(b, 2, limit);
    let ego_lane = b.rng.random_range(0..2);
    b.w.route = paths[ego_lane];
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
        b.w.route,
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
    b.w.agents[lead].idm.headway = 1.2;
    let len = b.w.map.path_length(b.w.route);
    b.populate(
        b.w.route,
        lead_s + 30.0,
        len,
        b.d.traffic_density * 0.5,
        (0.8, 1.0),
        (0.0, 0.0),
    );
    let other = paths[1 - ego_lane];
    let olen = b.w.map.path_length(other);
    b.populate(
        other,
        0.0,
        olen,
        b.d.traffic_density,
        (0.6, 1.0),
        (s0 - 8.0, s0 + 8.0),
    );
    b.place_ego(s0, v);
    time_limit(b.w, 15.0);
}

fn cut_in(b: &mut Builder) {
    let limit = 19.4 * b.d.speed;
    let n = if b.rng.random::<bool>() { 2 } else { 3 };
    let paths = straight_ish_road(b, n, limit);
    let ego_lane = b.rng.random_range(0..n);
    b.w.route = paths[ego_lane];
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
        b.w.route,
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
    let len = b.w.map.path_length(b.w.route);
    b.populate(
        b.w.route,
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
        let plen = b.w.map.path_length(p);
        let adjacent = (k as isize - ego_lane as isize).abs() == 1;
        let clear = if adjacent {
            (s0 - 10.0, cut_s + 25.0)
        } else {
            (s0 - 8.0, s0 + 8.0)
        };
        b.populate(p, 0.0, plen, b.d.traffic_density, (0.6, 1.0), clear);
    }
    b.place_ego(s0, v);
    time_limit(b.w, 15.0);
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
        incoming[k] = b.w.map.add_lane(&b.dense, w, limit);
        b.dense.clear();
        b.dense.push(u * j - n * (0.5 * w));
        b.dense.push(u * (arm_len + j) - n * (0.5 * w));
        outgoing[k] = b.w.map.add_lane(&b.dense, w, limit);
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
            conn[k][m] = b.w.map.add_lane(&b.dense, w, limit);
            b.w.map.link(incoming[k], conn[k][m]);
            b.w.map.link(conn[k][m], outgoing[m]);
        }
    }
    // Exclusive phases: each approach in turn, with an all-red clearance.
    let (green, yellow, all_red) = (7.0, 3.0, 1.5);
    let slot = green + yellow + all_red;
    let cycle = 4.0 * slot;
    let offset0 = b.u(0.0, cycle);
    for k in 0..4 {
        let uk = Vec2::from_angle(k as f32 * FRAC_PI_2);
        b.w.lights.push(TrafficLight {
            pos: uk * j + uk.perp() * (0.5 * w),
            heading: -uk,
            offset: (offset0 - k as f32 * slot).rem_euclid(cycle),
            green,
            yellow,
            cycle,
        });
    }
    let path_for = |b: &mut Builder, k: usize, m: usize| {
        b.w.map.add_path(
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
    b.w.route = path_for(b, 3, m);
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
        let out_path = b.w.map.add_path(&[out_lane], &[None]);
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
    time_limit(b.w, cycle);
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
    let left = b.w.map.add_lane(&b.dense, w, limit);
    line(b, 0.0, x_merge, -0.5 * w);
    let right_a = b.w.map.add_lane(&b.dense, w, limit);
    line(b, x_merge, road_len, -0.5 * w);
    let right_b = b.w.map.add_lane(&b.dense, w, limit);
    b.w.map.link(right_a, right_b);
    b.w.map.set_neighbours(left, right_a);
    b.w.map.set_neighbours(left, right_b);
    // On-ramp from below, then a parallel acceleration lane, then a taper into the right lane.
    hermite(
        Vec2::new(x_acc_start - 110.0, -1.5 * w - 30.0),
        0.35,
        Vec2::new(x_acc_start, -1.5 * w),
        0.0,
        &mut b.dense,
    );
    let ramp = b.w.map.add_lane(&b.dense, w, 0.8 * limit);
    line(b, x_acc_start, x_taper, -1.5 * w);
    let accel_lane = b.w.map.add_lane(&b.dense, w, limit);
    hermite(
        Vec2::new(x_taper, -1.5 * w),
        0.0,
        Vec2::new(x_merge, -0.5 * w),
        0.0,
        &mut b.dense,
    );
    let taper = b.w.map.add_lane(&b.dense, w, limit);
    b.w.map.link(ramp, accel_lane);
    b.w.map.link(accel_lane, taper);
    b.w.map.link(taper, right_b);
    b.w.map.set_neighbours(right_a, accel_lane);
    b.w.route =
        b.w.map
            .add_path(&[ramp, accel_lane, taper, right_b], &[None; 4]);
    let main = b.w.map.add_path(&[right_a, right_b], &[None, None]);
    let left_path = b.w.map.add_path(&[left], &[None]);
    let route_lanes = b.w.map.path_lanes(b.w.route);
    let s_route_merge = route_lanes[3].s_start;
    b.w.merge = Some(MergeLink {
        main_path: main as u16,
        s_main_merge: x_merge,
        s_route_merge,
    });
    let density = (b.d.traffic_density * 1.5).min(5.0);
    b.populate(main, 0.0, road_len, density, (0.6, 0.9), (-1.0, -1.0));
    b.populate(left_path, 0.0, road_len, density, (0.7, 1.0), (-1.0, -1.0));
    let polite = Builder::lerp(0.9, 0.3, b.d.aggressiveness);
    for i in 0..b.w.agents.len() {
        b.w.agents[i].yields_to_ego = b.rng.random::<f32>() < polite;
    }
    let v = b.u(0.5, 0.7) * limit;
    b.place_ego(10.0, v);
    time_limit(b.w, 20.0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_difficulty_names_field_and_range() {
        let d = Difficulty {
            curvature: 1.7,
            ..Default::default()
        };
        let e = d.validate().unwrap_err();
        assert_eq!(e.field, "curvature");
        assert_eq!((e.min, e.max), (0.0, 1.0));
        let msg = e.to_string();
        assert!(
            msg.contains("curvature") && msg.contains("1.7") && msg.contains("0 to 1"),
            "{msg}"
        );
        let nan = Difficulty {
            speed: f32::NAN,
            ..Default::default()
        };
        assert_eq!(nan.validate().unwrap_err().field, "speed");
        assert!(Difficulty::default().validate().is_ok());
        assert!(Difficulty::default().harder().validate().is_ok());
    }

    #[test]
    fn difficulty_from_toml_rejects_unknown_fields() {
        let ok: Difficulty = toml::from_str("traffic_density = 2.0").unwrap();
        assert_eq!(ok.traffic_density, 2.0);
        assert_eq!(ok.curvature, Difficulty::default().curvature);
        let err = toml::from_str::<Difficulty>("trafic_density = 2.0").unwrap_err();
        assert!(err.to_string().contains("trafic_density"), "{err}");
    }

    #[test]
    fn splits_are_disjoint_and_suites_stay_inside() {
        let d = Difficulty::default();
        for split in [Split::Train, Split::Eval, Split::Hard] {
            for spec in split.suite(&Family::ALL, 50, d) {
                assert!(split.contains(spec.seed));
                for other in [Split::Train, Split::Eval, Split::Hard] {
                    if other != split {
                        assert!(!other.contains(spec.seed));
                    }
                }
            }
        }
        assert_eq!(
            Split::Hard.suite(&Family::ALL, 1, d)[0].difficulty,
            d.harder()
        );
    }
}
