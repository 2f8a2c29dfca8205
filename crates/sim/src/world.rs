//! One driving world: map, traffic, lights, the ego, and the rules that score it.

use crate::config::{ControllerParams, SimConfig, VehicleParams};
use crate::events::{EndReason, StepEvents, StepResult};
use crate::geom::{OrientedBox, Vec2};
use crate::metrics::{
    comfort_violations, nuplan_comfort, nuplan_score, ComfortFilter, EpisodeStats,
};
use crate::reward;
use crate::road::{Lane, RoadMap, SPACING};
use crate::scenario::{MergeLink, Scenario};
use crate::spec::ScenarioSpec;
use crate::traffic::{agent_yields_at_merge, Agent, Behaviour, LightState, TrafficLight};
use crate::vehicle::{bicycle_step, limit_jerk, track_waypoints, BicycleState};

/// Strongest braking traffic agents use (m/s^2); above an emergency stop of a passenger car.
pub const AGENT_MAX_BRAKE: f32 = 9.0;

/// Below this speed (m/s) the ego counts as standing: a collision then is not its fault.
const STANDSTILL_SPEED: f32 = 0.1;

/// Braking traffic agents accept to stop for a yellow light (m/s^2).
pub const AGENT_YELLOW_DECEL: f32 = 4.0;

/// A single world. Reset fills it from a [`Scenario`] (generated from a [`ScenarioSpec`]);
/// step advances it by `dt`.
#[derive(Clone, Debug)]
pub struct World {
    pub cfg: SimConfig,
    pub spec: ScenarioSpec,
    pub map: RoadMap,
    pub lights: Vec<TrafficLight>,
    pub agents: Vec<Agent>,
    pub statics: Vec<OrientedBox>,
    pub ego: BicycleState,
    /// Path index of the ego route.
    pub route: usize,
    pub route_len: f32,
    pub merge: Option<MergeLink>,
    /// Ego progress along the route (projection of the box centre).
    pub route_s: f32,
    /// Signed lateral offset of the ego centre from the route centreline, metres (left +).
    pub route_lat: f32,
    /// Route tangent at `route_s`.
    pub route_dir: Vec2,
    pub step_count: u32,
    pub time_limit_steps: u32,
    /// Speed the route allows at each resampled point (limit and curvature), m/s.
    pub speed_profile: Vec<f32>,
    pub stats: EpisodeStats,
    /// The plan executed in the last step (ego frame), for rendering.
    pub last_plan: Vec<[f32; 2]>,
    best_progress: f32,
    stall_anchor: f32,
    stall_steps: u32,
    agent_accel: Vec<f32>,
    comfort_filter: ComfortFilter,
}

/// The nearest obstacle ahead on a path.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Leader {
    /// Bumper-to-bumper gap, metres.
    pub gap: f32,
    /// Leader speed along the path.
    pub v: f32,
    /// Leader acceleration along the path, m/s^2 (0 for obstacles and stop lines). A
    /// privileged observer sees a scripted hard brake from the step it starts
    /// ([`Agent::intended_accel`]).
    pub accel: f32,
}

impl Leader {
    pub const NONE: Leader = Leader {
        gap: f32::INFINITY,
        v: 0.0,
        accel: 0.0,
    };
}

/// A search for the nearest obstacle ahead of a vehicle on a path ([`World::leader_on_path`]).
/// [`World::ego_leader_query`] fills in the ego on its route.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LeaderQuery {
    /// Path index the vehicle follows.
    pub path: usize,
    /// Arc length of the vehicle's centre on `path`, metres.
    pub s: f32,
    /// Lateral offset of the vehicle's centre from the path centreline (left +), metres.
    pub d: f32,
    pub half_width: f32,
    pub half_length: f32,
    /// The vehicle's speed: whether it can still stop for a yellow light.
    pub speed: f32,
    /// How far ahead to look, metres.
    pub horizon: f32,
    /// Who looks: decides which vehicles are seen and where.
    pub observer: Observer,
    /// Whether stop lines whose light demands a stop count as obstacles.
    pub stop_lines: StopLines,
    /// Vehicles and obstacles nearer than this bumper-to-bumper gap (metres; negative when
    /// their boxes overlap along the path) are beside the vehicle, not ahead of it, and are
    /// skipped; `f32::NEG_INFINITY` keeps every one.
    pub min_gap: f32,
}

/// Who searches for a leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Observer {
    /// The ego as any planner sees it: every active agent where it is now.
    Ego,
    /// The privileged expert: cut-in agents where they are going (their intended lateral
    /// offset), not where they are.
    PrivilegedEgo,
    /// Traffic agent `i`: every other active agent, and the ego.
    Agent(usize),
}

/// Whether a leader search stops at traffic lights.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum StopLines {
    /// Lights are not obstacles.
    Ignore,
    /// A stop line is an obstacle at red, and at yellow when stopping before it needs no
    /// more than `yellow_decel` (m/s^2).
    Obey { yellow_decel: f32 },
}

impl World {
    pub fn new(cfg: SimConfig) -> Self {
        World {
            cfg,
            spec: ScenarioSpec::default(),
            map: RoadMap::default(),
            lights: Vec::new(),
            agents: Vec::new(),
            statics: Vec::new(),
            ego: BicycleState::default(),
            route: 0,
            route_len: 0.0,
            merge: None,
            route_s: 0.0,
            route_lat: 0.0,
            route_dir: Vec2::new(1.0, 0.0),
            step_count: 0,
            time_limit_steps: 0,
            speed_profile: Vec::new(),
            stats: EpisodeStats::default(),
            last_plan: Vec::new(),
            best_progress: 0.0,
            stall_anchor: 0.0,
            stall_steps: 0,
            agent_accel: Vec::new(),
            comfort_filter: Default::default(),
        }
    }

    /// Simulated time, seconds.
    #[inline]
    pub fn time(&self) -> f32 {
        self.step_count as f32 * self.cfg.dt
    }

    pub fn vehicle(&self) -> &VehicleParams {
        &self.cfg.vehicle
    }

    pub fn controller(&self) -> &ControllerParams {
        &self.cfg.controller
    }

    pub fn ego_box(&self) -> OrientedBox {
        self.ego.bbox(&self.cfg.vehicle)
    }

    /// Route completion so far, percent.
    pub fn route_completion(&self) -> f32 {
        (100.0 * self.best_progress / self.route_len).clamp(0.0, 100.0)
    }

    /// Allowed speed at route arc length `s`.
    pub fn allowed_speed(&self, s: f32) -> f32 {
        let i = ((s / SPACING).max(0.0) as usize).min(self.speed_profile.len() - 1);
        self.speed_profile[i]
    }

    /// Resets to the scenario `spec` (deterministic in `spec`).
    pub fn reset(&mut self, spec: ScenarioSpec) {
        // The last scenario's buffers, reused: resets do not grow the heap.
        let mut scenario = Scenario {
            map: std::mem::take(&mut self.map),
            lights: std::mem::take(&mut self.lights),
            agents: std::mem::take(&mut self.agents),
            statics: std::mem::take(&mut self.statics),
            ..Scenario::default()
        };
        scenario.regenerate(spec, &self.cfg);
        self.reset_from(scenario);
    }

    /// Resets to a generated scenario: the world takes its map, traffic and ego, and starts a
    /// new episode record.
    pub fn reset_from(&mut self, scenario: Scenario) {
        let Scenario {
            spec,
            map,
            lights,
            agents,
            statics,
            ego,
            route,
            route_len,
            merge,
            time_limit_steps,
        } = scenario;
        self.spec = spec;
        self.map = map;
        self.lights = lights;
        self.agents = agents;
        self.statics = statics;
        self.ego = ego;
        self.route = route;
        self.route_len = route_len;
        self.merge = merge;
        self.time_limit_steps = time_limit_steps;
        self.step_count = 0;
        self.stats = EpisodeStats {
            family: spec.family,
            seed: spec.seed,
            route_length: route_len,
            ..Default::default()
        };
        self.comfort_filter = ComfortFilter::default();
        self.update_agent_poses();
        let c = self.ego.center(&self.cfg.vehicle);
        let (s, _) = self
            .map
            .lines
            .project_global(self.map.paths[self.route].line, c);
        self.track_route(s);
        self.best_progress = self.route_s;
        self.stall_anchor = self.route_s;
        self.stall_steps = 0;
        self.last_plan.clear();
        self.compute_speed_profile();
    }

    /// Executes a plan of H waypoints (ego frame, flattened x0,y0,x1,y1,...) for one step:
    /// control, dynamics, traffic, progress, events, metrics, reward.
    ///
    /// A plan with a non-finite waypoint, or one that drives the ego into a non-finite state,
    /// is not executed: the episode ends with [`EndReason::NonFinite`] (a termination and a
    /// failure) and the world stays as it was before the step.
    pub fn step(&mut self, plan: &[f32]) -> StepResult {
        // Branch-free over the plan (vectorises): a NaN or infinite waypoint anywhere.
        if !plan.iter().fold(true, |finite, x| finite & x.is_finite()) {
            return self.end_non_finite();
        }
        let before = BeforeStep {
            ego: self.ego,
            front: self.route_s + 0.5 * self.cfg.vehicle.length,
            best_progress: self.best_progress,
        };
        let (steer, accel) = self.control(plan);
        let brake_forced = self.brake_forced(accel);
        self.dynamics(steer, accel);
        if !self.ego.is_finite() {
            self.ego = before.ego;
            return self.end_non_finite();
        }
        self.traffic();
        self.step_count += 1;
        self.progress();
        let end = self.events(&before);
        let progress_gain = self.best_progress - before.best_progress;
        let (comfort_violations, comfort_flagged) = self.comfort_metrics(&before.ego);
        let lane = self.map.lanes[self.map.lane_at(self.route, self.route_s) as usize];
        let outside_lane = self.lane_metrics(&lane, progress_gain);
        self.nuplan_metrics(&before, lane.speed_limit);
        let comfort_decel = -nuplan_comfort::MIN_LON_ACCEL;
        if brake_forced && self.ego.accel < -comfort_decel {
            self.stats.forced_brake_steps += 1;
        }
        // Reward: a function of what the step produced.
        let lead = self.reward_leader();
        let events = StepEvents {
            end,
            progress_gain,
            route_length: self.route_len,
            speed: self.ego.v,
            speed_limit: lane.speed_limit,
            comfort_violations,
            comfort_flagged,
            outside_lane,
            lead_gap: lead.gap,
            lead_speed: lead.v,
        };
        let reward = reward::compute(&events, &self.cfg.reward);
        if end != EndReason::Running {
            let rc = if end == EndReason::RouteCompleted {
                100.0
            } else {
                self.route_completion()
            };
            self.stats.finish(end, rc);
        }
        StepResult { reward, end }
    }

    /// The ego on its route looking `horizon` metres ahead, as any planner sees it, lights
    /// ignored; change fields for other views.
    pub fn ego_leader_query(&self, horizon: f32) -> LeaderQuery {
        let vp = &self.cfg.vehicle;
        LeaderQuery {
            path: self.route,
            s: self.route_s,
            d: self.route_lat,
            half_width: 0.5 * vp.width,
            half_length: 0.5 * vp.length,
            speed: self.ego.v,
            horizon,
            observer: Observer::Ego,
            stop_lines: StopLines::Ignore,
            min_gap: f32::NEG_INFINITY,
        }
    }

    /// Nearest obstacle ahead of the vehicle described by `q`: active agents (as `q.observer`
    /// sees them), the ego when an agent looks, static obstacles, and (per `q.stop_lines`)
    /// stop lines whose light demands a stop.
    #[inline]
    pub fn leader_on_path(&self, q: &LeaderQuery) -> Leader {
        let LeaderQuery {
            path,
            s,
            d,
            half_width: half_w,
            half_length: half_l,
            speed: v,
            horizon,
            observer,
            stop_lines,
            min_gap,
        } = *q;
        let (skip_agent, include_ego, privileged) = match observer {
            Observer::Ego => (None, false, false),
            Observer::PrivilegedEgo => (None, false, true),
            Observer::Agent(i) => (Some(i), true, false),
        };
        let line = self.map.paths[path].line;
        let lines = &self.map.lines;
        let (p0, _) = lines.sample(line, s);
        let t_now = self.time();
        let mut best = Leader::NONE;
        // Centre, heading, half length, half width, speed, lateral offset correction and
        // acceleration of a candidate.
        let mut consider = |c: Vec2, h: Vec2, hl: f32, hw: f32, ov: f32, od: f32, oa: f32| {
            let de = (c - p0).norm();
            if de > horizon + hl {
                return;
            }
            let mut s1 = s + de;
            let (q, t) = lines.sample(line, s1);
            s1 += (c - q).dot(t);
            let ds = s1 - s;
            if ds <= 0.0 {
                return;
            }
            let (q, t) = lines.sample(line, s1);
            let lat = t.cross(c - q) - od;
            let ext_lat = hl * t.cross(h).abs() + hw * t.dot(h).abs();
            if (lat - d).abs() > half_w + ext_lat + 0.3 {
                return;
            }
            let ext_lon = hl * t.dot(h).abs() + hw * t.cross(h).abs();
            let gap = ds - half_l - ext_lon;
            if gap < best.gap && gap >= min_gap {
                best = Leader {
                    gap,
                    v: ov * h.dot(t),
                    accel: oa * h.dot(t),
                };
            }
        };
        for (i, a) in self.agents.iter().enumerate() {
            if !a.active || Some(i) == skip_agent {
                continue;
            }
            // A privileged planner sees where a cut-in is going, not where it is.
            let (od, oa) = if privileged {
                (a.d - a.intended_d(t_now), a.intended_accel(t_now))
            } else {
                (0.0, a.accel)
            };
            consider(a.pos, a.heading, 0.5 * a.length, 0.5 * a.width, a.v, od, oa);
        }
        if include_ego {
            let vp = &self.cfg.vehicle;
            let h = Vec2::from_angle(self.ego.yaw);
            consider(
                self.ego.center(vp),
                h,
                0.5 * vp.length,
                0.5 * vp.width,
                self.ego.v,
                0.0,
                self.ego.accel,
            );
        }
        for b in &self.statics {
            consider(
                b.center,
                b.heading,
                b.half_length,
                b.half_width,
                0.0,
                0.0,
                0.0,
            );
        }
        let StopLines::Obey {
            yellow_decel: stop_decel,
        } = stop_lines
        else {
            return best;
        };
        for stop in self.map.path_stops(path) {
            let gap = stop.s - (s + half_l);
            if gap < -0.5 || gap > horizon || gap >= best.gap {
                continue;
            }
            let must_stop = match self.lights[stop.light as usize].state(t_now) {
                LightState::Green => false,
                LightState::Red => true,
                // Stop for yellow only if it can be done at the accepted deceleration.
                LightState::Yellow => gap > v * v / (2.0 * stop_decel),
            };
            if must_stop {
                best = Leader {
                    gap: gap.max(0.0),
                    v: 0.0,
                    accel: 0.0,
                };
            }
        }
        best
    }

    fn track_route(&mut self, hint: f32) {
        let line = self.map.paths[self.route].line;
        let c = self.ego.center(&self.cfg.vehicle);
        let (s, lat, dir) = self.map.lines.project(line, c, hint);
        self.route_s = s;
        self.route_lat = lat;
        self.route_dir = dir;
    }

    /// Allowed speed along the route ([`crate::road::speed_profile`]).
    fn compute_speed_profile(&mut self) {
        let route = self.route;
        let line = self.map.paths[route].line;
        let map = &self.map;
        crate::road::speed_profile(
            map.lines.points(line),
            |s| map.lanes[map.lane_at(route, s) as usize].speed_limit,
            self.cfg.expert.lateral_accel,
            self.cfg.expert.comfort_brake,
            &mut self.speed_profile,
        );
    }

    fn update_agent_poses(&mut self) {
        let lines = &self.map.lines;
        for a in self.agents.iter_mut().filter(|a| a.active) {
            let line = self.map.paths[a.path as usize].line;
            let (q, t) = lines.sample(line, a.s);
            a.pos = q + t.perp() * a.d;
            a.heading = t;
        }
    }

    /// Ends the episode on a plan or state that is not finite. Nothing is driven: no progress,
    /// so the reward is the terminal penalty and the route completion what was driven before.
    fn end_non_finite(&mut self) -> StepResult {
        let end = EndReason::NonFinite;
        let lane = self.map.lanes[self.map.lane_at(self.route, self.route_s) as usize];
        let events = StepEvents::non_finite(self.route_len, self.ego.v, lane.speed_limit);
        let reward = reward::compute(&events, &self.cfg.reward);
        self.stats.finish(end, self.route_completion());
        StepResult { reward, end }
    }

    /// Control: the waypoint controller turns the plan into steering and acceleration, the
    /// acceleration jerk-limited from the last step's.
    fn control(&mut self, plan: &[f32]) -> (f32, f32) {
        self.last_plan.clear();
        self.last_plan
            .extend(plan.chunks_exact(2).map(|w| [w[0], w[1]]));
        let (steer, accel) = track_waypoints(
            &self.last_plan,
            self.ego.v,
            &self.cfg.vehicle,
            &self.cfg.controller,
        );
        let cp = &self.cfg.controller;
        (steer, limit_jerk(accel, self.ego.accel, cp, self.cfg.dt))
    }

    /// Dynamics: the kinematic bicycle advances the ego by one step.
    fn dynamics(&mut self, steer: f32, accel: f32) {
        bicycle_step(&mut self.ego, &self.cfg.vehicle, steer, accel, self.cfg.dt);
    }

    /// Traffic: every agent advances by one step: behaviour scripts, IDM against the nearest
    /// obstacle ahead (other agents, the ego, lights; merging egos for polite drivers).
    fn traffic(&mut self) {
        let dt = self.cfg.dt;
        let t = self.time();
        let n = self.agents.len();
        let mut acc = std::mem::take(&mut self.agent_accel);
        acc.clear();
        acc.resize(n, 0.0);
        for (i, acc_i) in acc.iter_mut().enumerate() {
            let a = self.agents[i];
            if !a.active {
                continue;
            }
            let horizon = (a.v * 3.0 + 20.0).min(80.0);
            let mut lead = self.leader_on_path(&LeaderQuery {
                path: a.path as usize,
                s: a.s,
                d: a.d,
                half_width: 0.5 * a.width,
                half_length: 0.5 * a.length,
                speed: a.v,
                horizon,
                observer: Observer::Agent(i),
                stop_lines: StopLines::Obey {
                    yellow_decel: AGENT_YELLOW_DECEL,
                },
                min_gap: f32::NEG_INFINITY,
            });
            // Polite drivers on the main road treat a merging ego as if it were already in
            // their lane (virtual-vehicle projection at the merge).
            if let Some(m) = self.merge {
                if a.path == m.main_path
                    && self.route_s < m.s_route_merge
                    && m.s_main_merge - a.s < 60.0
                {
                    let rel = m.ego_ahead_by(self.route_s, a.s);
                    let half = 0.5 * (a.length + self.cfg.vehicle.length);
                    if agent_yields_at_merge(&a, rel, half) && rel - half < lead.gap {
                        lead = Leader {
                            gap: rel - half,
                            v: self.ego.v,
                            accel: self.ego.accel,
                        };
                    }
                }
            }
            let mut accel = a.idm.accel(a.v, lead.gap, lead.v, AGENT_MAX_BRAKE);
            if let Behaviour::HardBrake {
                at,
                decel,
                v_min,
                hold,
            } = a.behaviour
            {
                // Brake to v_min, stay there until `at + hold`, then IDM takes over again.
                if t >= at && t < at + hold {
                    accel = accel.min(if a.v > v_min { -decel } else { 0.0 });
                }
            }
            *acc_i = accel;
        }
        for (a, &accel) in self.agents.iter_mut().zip(&acc) {
            if !a.active {
                continue;
            }
            let v1 = (a.v + accel * dt).max(0.0);
            a.s += 0.5 * (a.v + v1) * dt;
            a.accel = (v1 - a.v) / dt;
            a.v = v1;
            a.d = a.scripted_d(t + dt);
            let len = self.map.path_length(a.path as usize);
            if a.s > len - 1.0 {
                a.active = false;
            }
        }
        self.agent_accel = acc;
        self.update_agent_poses();
    }

    /// Progress along the route: the best progress so far and the stall counter behind
    /// `blocked_seconds` (progress of less than 0.5 m does not reset it).
    fn progress(&mut self) {
        self.track_route(self.route_s);
        self.best_progress = self.best_progress.max(self.route_s.min(self.route_len));
        if self.best_progress > self.stall_anchor + 0.5 {
            self.stall_anchor = self.best_progress;
            self.stall_steps = 0;
        } else {
            self.stall_steps += 1;
        }
    }

    /// Events: a collision, leaving the road or running a red light ends the episode and is
    /// counted in the record; otherwise completing the route, being blocked or the time limit
    /// ends it.
    fn events(&mut self, before: &BeforeStep) -> EndReason {
        let vp = &self.cfg.vehicle;
        let ego_box = self.ego.bbox(vp);
        let mut end = EndReason::Running;
        if let Some(other) = self.agents.iter().find(|a| {
            a.active
                && ego_box.overlaps(&OrientedBox {
                    center: a.pos,
                    heading: a.heading,
                    half_length: 0.5 * a.length,
                    half_width: 0.5 * a.width,
                })
        }) {
            end = EndReason::CollisionVehicle;
            self.stats.collisions_vehicle += 1;
            // nuPlan's at-fault rule, approximated: rear-ended (the other's centre behind
            // the ego's, within its width), or hit while standing.
            let heading = Vec2::from_angle(self.ego.yaw);
            let rel = other.pos - ego_box.center;
            let rear_ended =
                rel.dot(heading) < 0.0 && rel.dot(heading.perp()).abs() < 0.5 * vp.width;
            if rear_ended || before.ego.v < STANDSTILL_SPEED {
                self.stats.collisions_vehicle_not_at_fault += 1;
            }
        } else if self.statics.iter().any(|b| ego_box.overlaps(b)) {
            end = EndReason::CollisionStatic;
            self.stats.collisions_static += 1;
        } else if !ego_box.corners().iter().all(|&c| self.map.is_drivable(c)) {
            end = EndReason::OffRoad;
            self.stats.offroad += 1;
        } else {
            let t = self.time();
            let front = self.route_s + 0.5 * vp.length;
            for stop in self.map.path_stops(self.route) {
                if before.front < stop.s
                    && front >= stop.s
                    && self.lights[stop.light as usize].state(t) == LightState::Red
                {
                    end = EndReason::RedLight;
                    self.stats.red_lights += 1;
                }
            }
        }
        if end == EndReason::Running {
            if self.best_progress >= self.route_len - self.cfg.route_end_tolerance {
                end = EndReason::RouteCompleted;
            } else if self.stall_steps as f32 * self.cfg.dt >= self.cfg.blocked_seconds {
                end = EndReason::Blocked;
                self.stats.blocked = true;
            } else if self.step_count >= self.time_limit_steps {
                end = EndReason::TimeLimit;
                self.stats.timeout = true;
            }
        }
        end
    }

    /// Comfort metrics from the realised motion: nuPlan's filtered check goes into the
    /// episode record; the raw step-to-step violations (CaRL's per-step comfort) and whether
    /// the filtered check flagged this step are returned for the reward.
    fn comfort_metrics(&mut self, prev: &BicycleState) -> (u8, bool) {
        let dt = self.cfg.dt;
        let raw = comfort_violations(prev, &self.ego, dt, self.step_count > 1);
        let filtered = self.comfort_filter.push(&self.ego, dt);
        self.stats.record_comfort(filtered);
        (raw, filtered != 0)
    }

    /// Lane metrics: whether the ego box pokes out of the route lane `lane` (the route metres
    /// gained meanwhile count against the CARLA outside-lanes factor), the step count and the
    /// speed sum of the record.
    fn lane_metrics(&mut self, lane: &Lane, progress_gain: f32) -> bool {
        let half_lane = 0.5 * lane.width;
        let outside = self.route_lat.abs() + 0.5 * self.cfg.vehicle.width > half_lane + 0.3;
        if outside {
            self.stats.outside_lane_distance += progress_gain;
        }
        self.stats.steps += 1;
        self.stats.speed_sum += self.ego.v;
        outside
    }

    /// What nuPlan's score needs beyond the other metrics: speed above the limit, distance
    /// driven against the route and time to collision with the vehicle or obstacle ahead.
    /// One short leader search per step; no allocation.
    fn nuplan_metrics(&mut self, before: &BeforeStep, speed_limit: f32) {
        let v = self.ego.v;
        self.stats.overspeed_sum += (v - speed_limit).max(0.0);
        if Vec2::from_angle(self.ego.yaw).dot(self.route_dir) < 0.0 {
            self.stats.wrong_way_distance += 0.5 * (before.ego.v + v) * self.cfg.dt;
        }
        let ttc = nuplan_score::TTC_BOUND;
        if v > 0.0 {
            let lead = self.leader_on_path(&self.ego_leader_query(v * ttc));
            if v > lead.v && lead.gap < (v - lead.v) * ttc {
                self.stats.ttc_violation_steps += 1;
            }
        }
    }

    /// Whether braking with the command `accel` beyond nuPlan's comfort bound is forced: the
    /// vehicle or obstacle ahead on the route (as any planner sees it, lights ignored), at the
    /// moment of the decision, demands at least that bound to match its speed within the gap.
    /// Searches only when the command brakes that hard (rare).
    fn brake_forced(&self, accel: f32) -> bool {
        let comfort_decel = -nuplan_comfort::MIN_LON_ACCEL;
        if accel >= -comfort_decel {
            return false;
        }
        let v = self.ego.v;
        let horizon = v * v / (2.0 * comfort_decel) + 1.0;
        let lead = self.leader_on_path(&self.ego_leader_query(horizon));
        v > lead.v && (v - lead.v).powi(2) / (2.0 * lead.gap.max(0.1)) >= comfort_decel
    }

    /// The vehicle or obstacle ahead on the route that the time-to-collision penalty looks
    /// at (lights ignored), within twice the distance covered in `ttc_threshold`, or nearer a
    /// merging car (see the loop); none when the penalty is off.
    fn reward_leader(&self) -> Leader {
        let rc = &self.cfg.reward;
        if rc.ttc_threshold <= 0.0 {
            return Leader::NONE;
        }
        let horizon = (self.ego.v * rc.ttc_threshold * 2.0).max(10.0);
        let mut lead = self.leader_on_path(&self.ego_leader_query(horizon));
        // Merging traffic, mapped onto the route by its distance to the merge point: near the
        // merge, a main-road car abreast of the ego (negative gap) or ahead of it is a leader.
        if let Some(m) = self.merge {
            let to_merge = m.s_route_merge - self.route_s;
            if (-MergeLink::PAST..=MERGE_REWARD_DISTANCE).contains(&to_merge) {
                for a in self
                    .agents
                    .iter()
                    .filter(|a| a.active && a.path == m.main_path)
                {
                    let rel = m.ego_ahead_by(self.route_s, a.s);
                    let half = 0.5 * (a.length + self.cfg.vehicle.length);
                    if rel < half {
                        let gap = rel.abs() - half;
                        if gap < lead.gap {
                            lead = Leader {
                                gap,
                                v: a.v,
                                accel: a.accel,
                            };
                        }
                    }
                }
            }
        }
        lead
    }
}

/// From this far before the merge point the reward's time-to-collision factor sees merging
/// traffic (the taper's length), metres.
const MERGE_REWARD_DISTANCE: f32 = 60.0;

/// The ego before a step, for the events and metrics that compare before and after.
struct BeforeStep {
    ego: BicycleState,
    /// Route position of the front bumper.
    front: f32,
    best_progress: f32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::Idm;

    fn agent(s: f32, d: f32, behaviour: Behaviour) -> Agent {
        Agent {
            path: 0,
            s,
            d,
            v: 5.0,
            accel: 0.0,
            length: 4.0,
            width: 2.0,
            idm: Idm {
                v0: 10.0,
                headway: 1.0,
                s0: 2.0,
                a_max: 1.0,
                b: 2.0,
            },
            behaviour,
            yields_to_ego: true,
            active: true,
            pos: Vec2::ZERO,
            heading: Vec2::new(1.0, 0.0),
        }
    }

    /// A straight 200 m lane along x; the ego's centre at x = 20, standing; agents as given.
    fn straight_road(agents: Vec<Agent>) -> World {
        let cfg = SimConfig::default();
        let mut map = RoadMap::default();
        let lane = map.add_lane(&[Vec2::ZERO, Vec2::new(200.0, 0.0)], 3.5, 15.0);
        let route = map.add_path(&[lane], &[None]);
        map.build_index();
        let rc = cfg.vehicle.rear_to_center;
        let mut w = World::new(cfg);
        w.reset_from(Scenario {
            map,
            agents,
            ego: BicycleState {
                pos: Vec2::new(20.0 - rc, 0.0),
                ..Default::default()
            },
            route,
            route_len: 185.0,
            time_limit_steps: 100,
            ..Default::default()
        });
        w
    }

    #[test]
    fn leader_search_sees_what_its_observer_sees() {
        // Agent 0 ahead of the ego, agent 1 behind it, agent 2 cutting in from the left lane
        // (3.5 m left of the centreline) 12 m ahead of the ego, its manoeuvre due at t = 0.
        let cut_in = Behaviour::CutIn {
            at: 0.0,
            duration: 2.0,
            d_from: 3.5,
            d_to: 0.0,
        };
        let w = straight_road(vec![
            agent(50.0, 0.0, Behaviour::Idm),
            agent(10.0, 0.0, Behaviour::Idm),
            agent(32.0, 3.5, cut_in),
        ]);
        let ego = w.ego_leader_query(100.0);
        // Bumper to bumper: 50 - 20 - 4.6 / 2 - 4 / 2 = 25.7 m; the cut-in is still in its lane.
        let lead = w.leader_on_path(&ego);
        assert!((lead.gap - 25.7).abs() < 1e-3, "{lead:?}");
        assert_eq!(lead.v, 5.0);
        // The privileged expert sees the cut-in where it is going: 32 - 20 - 2.3 - 2 = 7.7 m.
        let expert = LeaderQuery {
            observer: Observer::PrivilegedEgo,
            ..ego
        };
        assert!((w.leader_on_path(&expert).gap - 7.7).abs() < 1e-3);
        // Nothing within a 20 m horizon for the ego.
        let short = LeaderQuery {
            horizon: 20.0,
            ..ego
        };
        assert_eq!(w.leader_on_path(&short), Leader::NONE);
        // Agent 1 sees the ego (standing) 20 - 10 - 2 - 2.3 = 5.7 m ahead; agent 0 sees nobody,
        // least of all itself.
        let from_agent = |i: usize| LeaderQuery {
            path: 0,
            s: w.agents[i].s,
            d: 0.0,
            half_width: 1.0,
            half_length: 2.0,
            speed: 5.0,
            horizon: 100.0,
            observer: Observer::Agent(i),
            stop_lines: StopLines::Ignore,
            min_gap: f32::NEG_INFINITY,
        };
        let behind = w.leader_on_path(&from_agent(1));
        assert!((behind.gap - 5.7).abs() < 1e-3, "{behind:?}");
        assert_eq!(behind.v, 0.0);
        assert_eq!(w.leader_on_path(&from_agent(0)), Leader::NONE);
    }

    /// A plan of constant acceleration `a` from speed `v` straight along x (ego frame).
    fn straight_plan(w: &World, v: f32, a: f32) -> Vec<f32> {
        let dt = w.cfg.controller.waypoint_dt;
        (1..=w.cfg.horizon)
            .flat_map(|j| {
                let t = j as f32 * dt;
                [v * t + 0.5 * a * t * t, 0.0]
            })
            .collect()
    }

    #[test]
    fn records_what_nuplans_score_needs() {
        // Overspeed: 17 m/s on a 15 m/s lane, nothing ahead: 2 m/s per step, no TTC issue.
        let mut w = straight_road(vec![]);
        w.ego.v = 17.0;
        w.step(&straight_plan(&w, 17.0, 0.0));
        assert!((w.stats.overspeed_sum - 2.0).abs() < 1e-4, "{:?}", w.stats);
        assert_eq!(w.stats.ttc_violation_steps, 0);
        assert_eq!(w.stats.wrong_way_distance, 0.0);
        // A standing car 5.7 m ahead at 10 m/s: TTC 0.57 s < 0.95 s. Braking at 6 m/s^2 is
        // forced: matching its speed within the gap needs 10^2 / (2 * ~4.7) > 4.05 m/s^2.
        let mut standing = agent(30.0, 0.0, Behaviour::Idm);
        standing.v = 0.0;
        standing.idm.a_max = 0.0;
        let mut w = straight_road(vec![standing]);
        w.ego.v = 10.0;
        w.step(&straight_plan(&w, 10.0, -6.0));
        assert_eq!(w.stats.ttc_violation_steps, 1, "{:?}", w.stats);
        assert_eq!(w.stats.forced_brake_steps, 1);
        // The same brake with nothing ahead is a choice, not forced.
        let mut w = straight_road(vec![]);
        w.ego.v = 10.0;
        w.step(&straight_plan(&w, 10.0, -6.0));
        assert_eq!(w.stats.forced_brake_steps, 0);
        // Rear-ended while driving: a collision, not at fault; driving into a car ahead is.
        let mut w = straight_road(vec![agent(16.6, 0.0, Behaviour::Idm)]);
        w.ego.v = 1.0;
        w.step(&straight_plan(&w, 1.0, 0.0));
        assert_eq!(w.stats.collisions_vehicle, 1);
        assert_eq!(w.stats.collisions_vehicle_not_at_fault, 1);
        let mut w = straight_road(vec![agent(23.5, 0.0, Behaviour::Idm)]);
        w.ego.v = 1.0;
        w.step(&straight_plan(&w, 1.0, 0.0));
        assert_eq!(w.stats.collisions_vehicle, 1);
        assert_eq!(w.stats.collisions_vehicle_not_at_fault, 0);
        // A side swipe with a car half a metre behind and 1.5 m to the left (outside the ego's
        // width): the ego's fault, as a merge into an occupied lane is.
        let mut w = straight_road(vec![agent(19.0, 1.5, Behaviour::Idm)]);
        w.ego.v = 1.0;
        w.step(&straight_plan(&w, 1.0, 0.0));
        assert_eq!(w.stats.collisions_vehicle, 1);
        assert_eq!(w.stats.collisions_vehicle_not_at_fault, 0);
    }
}
