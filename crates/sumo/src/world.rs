//! One world in SUMO: a SUMO process, the ego on a route through its network, and the rules
//! that score it, the same as the built-in world's: the waypoint controller and bicycle model
//! drive the ego ([`deltaplan_sim::vehicle`]); collisions are oriented-box overlaps
//! ([`OrientedBox::overlaps`]); off-road is a box corner outside every lane and junction area;
//! red lights are crossing a stop line at red; the episode record is an [`EpisodeStats`] and
//! the reward is [`deltaplan_sim::reward::compute`] of the step's events.
//!
//! SUMO is told the ego's pose (moveToXY onto its route) and steps its own traffic; the
//! vehicles within [`SENSE_RANGE`] of the ego and the ego's next traffic lights come back in the
//! same answer (subscriptions), so a step is one round trip.
//!
//! Or SUMO drives the ego itself ([`SumoWorld::reset_driven_by_sumo`],
//! [`SumoWorld::step_driven_by_sumo`]): the ego is then an ordinary SUMO vehicle on its route,
//! moved by SUMO's car-following model ([`SUMO_DRIVER`]), and the world reads its pose back
//! from the same answer (the ego is in its own context subscription). Everything else (the
//! observation, the checks, the episode record) is the same; this is the demonstrator of
//! module `demo`.

use crate::locate::SumoBinaries;
use crate::net::{point_in_polygon, EgoRoute, Network};
use crate::netgen::NetFiles;
use crate::process::{StartError, SumoProcess, SumoRun};
use crate::traci::{
    cmd, sumo_angle, var, yaw_from_sumo, Departure, Reader, Request, TraciError, Value, XyPose,
};
use deltaplan_sim::config::SimConfig;
use deltaplan_sim::events::{EndReason, StepEvents, StepResult};
use deltaplan_sim::geom::{OrientedBox, Vec2};
use deltaplan_sim::metrics::{
    comfort_violations, nuplan_comfort, nuplan_score, ComfortFilter, EpisodeStats,
};
use deltaplan_sim::obs::{
    write_ego_route, write_leader, write_merge, write_nearest, write_next_light, EgoOnRoute,
    Nearby, OBS_DIM,
};
use deltaplan_sim::road::{speed_profile, RoadMap, SPACING};
use deltaplan_sim::spec::Family;
use deltaplan_sim::traffic::LightState;
use deltaplan_sim::vehicle::{bicycle_step, limit_jerk, track_waypoints, BicycleState};
use deltaplan_stdx::seed::rng;
use std::sync::Arc;
use std::time::Duration;

/// Vehicles within this distance of the ego are read every step, metres.
pub const SENSE_RANGE: f64 = 80.0;

/// The ego's id in SUMO.
const EGO: &str = "ego";

/// Below this speed the ego counts as standing: a collision then is not its fault (as in the
/// built-in world).
const STANDSTILL_SPEED: f32 = 0.1;

/// SUMO's own driver model as the ego's driver, where it is the demonstrator: SUMO's default
/// car following (Krauss), obeying every rule SUMO checks (speed mode 31: lights, safe gaps,
/// limits). Its acceleration and comfortable deceleration are the built-in expert's
/// (`sim.expert.max_accel`, 2.0 m/s^2, and `sim.expert.max_comfort_decel`, 3.8): within
/// nuPlan's comfort bounds (2.40 and 4.05) as that expert is, where SUMO's passenger-car
/// defaults (2.6 and 4.5) are not, so every full start would fail the comfort check the
/// metrics and the reward apply (SUMO brakes harder, up to its emergency deceleration of 9,
/// only when it must). The settings below differ from SUMO's defaults too, each for the
/// demonstrations' sake.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SumoDriver {
    /// Krauss's driver imperfection (SUMO's `sigma`, default 0.5: random dawdling each
    /// step). 0: the label is a function of the traffic, not of a dice roll a planner cannot
    /// see, so the same state gets the same label.
    pub imperfection: f64,
    /// The multiple of the speed limit the driver aims for (SUMO draws one per vehicle around
    /// 1, deviation 0.1). 1: the limit, the target of the built-in expert and of the
    /// observation's `allowed_speed`, and the speed the overspeed metrics measure against.
    pub speed_factor: f64,
    /// Standstill gap to the vehicle ahead, metres (SUMO's default 2.5; the ego's vehicle type
    /// has 0 because deltaplan, not SUMO, drives it otherwise): a gap of 0 would stop with the
    /// bumpers touching, which deltaplan's box check counts as a collision.
    pub min_gap: f64,
    /// SUMO's lane-change mode for the ego. 0: no lane changes. The observation's route is
    /// the route's own lane sequence (each lane connected to the next), so the demonstrator
    /// keeps to it, as deltaplan's planners are asked to; a lane change would put it 3.5 m off
    /// the route the observation describes.
    pub lane_change_mode: i32,
}

/// The demonstrator's settings (see [`SumoDriver`]).
pub const SUMO_DRIVER: SumoDriver = SumoDriver {
    imperfection: 0.0,
    speed_factor: 1.0,
    min_gap: 2.5,
    lane_change_mode: 0,
};

/// Who drives the ego.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EgoControl {
    /// deltaplan's waypoint controller and bicycle model; SUMO is told the pose.
    Deltaplan,
    /// SUMO's driver model ([`SUMO_DRIVER`]); deltaplan reads the pose.
    Sumo,
}

/// The ego as SUMO reports it in a step's answer.
#[derive(Clone, Copy, Debug, PartialEq)]
struct ReportedEgo {
    /// SUMO's vehicle position: the middle of the front bumper.
    front: Vec2,
    yaw: f32,
    v: f32,
    accel: f32,
}

/// A network loaded once and shared by every world on it.
pub struct NetContext {
    pub files: NetFiles,
    pub network: Network,
    /// Every lane of the network, for the drivable area (lane capsules; junction polygons are
    /// checked besides).
    pub drivable: RoadMap,
}

impl NetContext {
    pub fn load(files: NetFiles) -> Result<Self, crate::net::NetError> {
        let network = Network::from_file(&files.net)?;
        let mut drivable = RoadMap::default();
        for l in &network.lanes {
            if l.cars && l.length > 0.1 && l.shape.len() >= 2 {
                drivable.add_lane(&l.shape, l.width, l.speed);
            }
        }
        drivable.build_index();
        Ok(NetContext {
            files,
            network,
            drivable,
        })
    }

    /// Whether `p` is on the road: on a lane or inside a junction's area.
    pub fn is_drivable(&self, p: Vec2) -> bool {
        self.drivable.is_drivable(p)
            || self
                .network
                .junctions
                .iter()
                .any(|j| j.shape.len() >= 3 && point_in_polygon(p, &j.shape))
    }
}

/// Settings of the SUMO worlds beyond the simulator's own [`SimConfig`].
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SumoConfig {
    /// Seconds SUMO runs before the ego enters (traffic fills the network).
    pub warmup_seconds: f32,
    /// Shortest ego route, metres.
    pub min_route_length: f32,
    /// Seconds one SUMO answer may take before the process counts as hung.
    pub timeout_seconds: f32,
    /// Demand of generated networks, vehicles per hour.
    pub vehicles_per_hour: u32,
    /// A SUMO process serves episode after episode (its traffic stays warm; only the ego is
    /// replaced) until half of this many simulated seconds remain of it; 0: a new process
    /// for every episode. The demand of generated networks lasts an hour.
    pub reuse_seconds: f32,
}

impl Default for SumoConfig {
    fn default() -> Self {
        SumoConfig {
            warmup_seconds: 60.0,
            min_route_length: 250.0,
            timeout_seconds: 30.0,
            vehicles_per_hour: 1500,
            reuse_seconds: 3600.0,
        }
    }
}

/// Why a SUMO world failed (the process died, hung or refused): the episode is lost.
#[derive(Debug, thiserror::Error)]
pub enum WorldError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error(transparent)]
    Traci(#[from] TraciError),
    #[error("no route of {0} m on this network")]
    NoRoute(f32),
    /// A step of the other driver: `step` on a world SUMO drives, or the reverse.
    #[error("{0}")]
    Control(&'static str),
    /// SUMO no longer has the ego it drives (removed before the end of its route).
    #[error("SUMO removed the ego {0:.1} m before the end of its route")]
    EgoRemoved(f32),
}

/// A vehicle of SUMO's traffic near the ego.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Neighbour {
    pub center: Vec2,
    pub heading: Vec2,
    pub v: f32,
    /// Longitudinal acceleration, m/s^2.
    pub accel: f32,
    pub length: f32,
    pub width: f32,
}

/// The nearest obstacle ahead on the route.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Leader {
    pub gap: f32,
    pub v: f32,
}

impl Leader {
    pub const NONE: Leader = Leader {
        gap: f32::INFINITY,
        v: 0.0,
    };
}

/// A stop line on the ego's route and the state SUMO last reported for its signal.
#[derive(Clone, Debug, PartialEq)]
struct Stop {
    s: f32,
    light: (String, u32),
    state: LightState,
}

/// One SUMO world.
pub struct SumoWorld {
    pub cfg: SimConfig,
    pub sumo_cfg: SumoConfig,
    pub net: Arc<NetContext>,
    bins: SumoBinaries,
    process: Option<SumoProcess>,
    req: Request,
    /// The episode's seed (route, start, SUMO's own randomness).
    pub seed: u64,
    pub route: EgoRoute,
    /// The route's centreline (path 0) and its lanes.
    pub map: RoadMap,
    pub route_len: f32,
    stops: Vec<Stop>,
    pub ego: BicycleState,
    pub route_s: f32,
    pub route_lat: f32,
    pub route_dir: Vec2,
    pub neighbours: Vec<Neighbour>,
    pub step_count: u32,
    pub time_limit_steps: u32,
    pub stats: EpisodeStats,
    speed_profile: Vec<f32>,
    /// The plan as waypoints for the controller (kept: no allocation per step).
    waypoints: Vec<[f32; 2]>,
    /// SUMO's simulated time, seconds.
    sim_time: f64,
    /// Ego routes added to this SUMO process (each needs its own id): the episodes it has
    /// served, 1 right after a reset that started it.
    ego_routes: u64,
    best_progress: f32,
    stall_anchor: f32,
    stall_steps: u32,
    comfort_filter: ComfortFilter,
    control: EgoControl,
}

impl SumoWorld {
    pub fn new(
        cfg: SimConfig,
        sumo_cfg: SumoConfig,
        net: Arc<NetContext>,
        bins: SumoBinaries,
    ) -> Self {
        SumoWorld {
            cfg,
            sumo_cfg,
            net,
            bins,
            process: None,
            req: Request::default(),
            seed: 0,
            route: EgoRoute {
                edges: Vec::new(),
                lanes: Vec::new(),
                lights: Vec::new(),
            },
            map: RoadMap::default(),
            route_len: 0.0,
            stops: Vec::new(),
            ego: BicycleState::default(),
            route_s: 0.0,
            route_lat: 0.0,
            route_dir: Vec2::new(1.0, 0.0),
            neighbours: Vec::new(),
            step_count: 0,
            time_limit_steps: 0,
            stats: EpisodeStats::default(),
            speed_profile: Vec::new(),
            waypoints: Vec::new(),
            sim_time: 0.0,
            ego_routes: 0,
            best_progress: 0.0,
            stall_anchor: 0.0,
            stall_steps: 0,
            comfort_filter: ComfortFilter::default(),
            control: EgoControl::Deltaplan,
        }
    }

    /// The SUMO process's id, while one runs.
    pub fn sumo_pid(&self) -> Option<u32> {
        self.process.as_ref().map(SumoProcess::pid)
    }

    /// Simulated time of the episode, seconds.
    pub fn time(&self) -> f32 {
        self.step_count as f32 * self.cfg.dt
    }

    /// Route completion so far, percent.
    pub fn route_completion(&self) -> f32 {
        (100.0 * self.best_progress / self.route_len).clamp(0.0, 100.0)
    }

    /// Starts episode `seed`: a fresh SUMO on the network (its traffic warmed up), a route
    /// drawn from the seed, the ego placed at its start; deltaplan drives it ([`SumoWorld::step`]).
    pub fn reset(&mut self, seed: u64) -> Result<(), WorldError> {
        self.start(seed, EgoControl::Deltaplan)
    }

    /// Starts episode `seed` as [`SumoWorld::reset`] does (same route, same start), with SUMO's
    /// own driver model ([`SUMO_DRIVER`]) driving the ego ([`SumoWorld::step_driven_by_sumo`]).
    pub fn reset_driven_by_sumo(&mut self, seed: u64) -> Result<(), WorldError> {
        self.start(seed, EgoControl::Sumo)
    }

    fn start(&mut self, seed: u64, control: EgoControl) -> Result<(), WorldError> {
        self.seed = seed;
        self.control = control;
        let reuse = self.process.is_some()
            && self.sim_time - self.net.files.begin + 0.5 * f64::from(self.sumo_cfg.reuse_seconds)
                < f64::from(self.sumo_cfg.reuse_seconds);
        let mut process = match self.process.take() {
            // The traffic of the last episode is warm already: only the ego goes.
            Some(mut p) if reuse => {
                self.req.clear();
                // Subscriptions with no variables end the ego's subscriptions (SUMO quits on
                // a subscription to a vehicle that is gone).
                self.req
                    .subscribe_vehicle(EGO, &[])
                    .subscribe_vehicle_context(EGO, SENSE_RANGE, &[])
                    .remove_vehicle(EGO)
                    .simulation_step(0.0);
                let mut a = p.client.send(&self.req)?;
                a.status(cmd::SUBSCRIBE_VEHICLE_VARIABLE)?;
                a.status(cmd::SUBSCRIBE_VEHICLE_CONTEXT)?;
                a.status(cmd::SET_VEHICLE_VARIABLE)?;
                a.status(cmd::SIMULATION_STEP)?;
                self.sim_time += f64::from(self.cfg.dt);
                p
            }
            _ => {
                let run = SumoRun {
                    net: self.net.files.net.clone(),
                    routes: self.net.files.routes.clone(),
                    begin: self.net.files.begin,
                    seed,
                    step_length: self.cfg.dt,
                    timeout: Duration::from_secs_f32(self.sumo_cfg.timeout_seconds),
                };
                let mut p = SumoProcess::start(&self.bins, &run)?;
                // Traffic fills the network: many steps in one call, which may take longer
                // than one step may (a loaded machine: a minute at least).
                self.sim_time = self.net.files.begin + f64::from(self.sumo_cfg.warmup_seconds);
                self.req.clear();
                self.req.simulation_step(self.sim_time);
                p.client
                    .set_timeout(run.timeout.max(Duration::from_secs(60)))
                    .map_err(TraciError::from)?;
                let mut a = p.client.send(&self.req)?;
                a.status(cmd::SIMULATION_STEP)?;
                p.client
                    .set_timeout(run.timeout)
                    .map_err(TraciError::from)?;
                // Route ids count from 1 in every process, so a process's episodes replay
                // with the same commands (`SumoEnv`'s resume).
                self.ego_routes = 0;
                p
            }
        };
        self.ego_routes += 1;
        let route_id = format!("ego_route_{}", self.ego_routes);
        let mut r = rng(seed, 0x524f_5554);
        let route = self
            .net
            .network
            .random_route(&mut r, self.sumo_cfg.min_route_length)
            .ok_or(WorldError::NoRoute(self.sumo_cfg.min_route_length))?;
        self.build_route(route);
        let vp = self.cfg.vehicle;
        let net_ctx = Arc::clone(&self.net);
        let net = &net_ctx.network;
        let lane0 = &net.lanes[self.route.lanes[0]];
        let s0 = (0.25 * lane0.length).min(8.0);
        let (p, t) = self.map.lines.sample(self.map.paths[0].line, s0);
        let yaw = t.y.atan2(t.x);
        let v0 = (0.6 * lane0.speed).min(8.0);
        self.ego = BicycleState {
            pos: p - t * vp.rear_to_center,
            yaw,
            v: v0,
            ..Default::default()
        };
        self.clear_start(&mut process, p)?;
        let edges: Vec<&str> = self
            .route
            .edges
            .iter()
            .map(|&e| net.edges[e].id.as_str())
            .collect();
        let front = p + t * (0.5 * vp.length);
        let req = &mut self.req;
        req.clear();
        req.add_route(&route_id, &edges).add_vehicle(
            EGO,
            &route_id,
            &Departure {
                vehicle_type: "ego".into(),
                lane: lane0.index.to_string(),
                pos: format!("{:.2}", s0 + 0.5 * vp.length),
                speed: format!("{v0:.2}"),
            },
        );
        match control {
            EgoControl::Deltaplan => req
                .set_vehicle_int(EGO, var::SPEED_MODE, 0)
                .set_vehicle_int(EGO, var::LANE_CHANGE_MODE, 0),
            // SUMO's speed mode stays its default (every check on).
            EgoControl::Sumo => req
                .set_vehicle_double(EGO, var::ACCEL, f64::from(self.cfg.expert.max_accel))
                .set_vehicle_double(
                    EGO,
                    var::DECEL,
                    f64::from(self.cfg.expert.max_comfort_decel),
                )
                .set_vehicle_double(EGO, var::IMPERFECTION, SUMO_DRIVER.imperfection)
                .set_vehicle_double(EGO, var::SPEED_FACTOR, SUMO_DRIVER.speed_factor)
                .set_vehicle_double(EGO, var::MIN_GAP, SUMO_DRIVER.min_gap)
                .set_vehicle_int(EGO, var::LANE_CHANGE_MODE, SUMO_DRIVER.lane_change_mode),
        }
        // Both start at the same pose (the placement also inserts the ego at once, where a
        // departure could wait for a gap).
        .move_to_xy(EGO, &ego_pose(front, yaw));
        process.client.send_checked(req)?;
        req.clear();
        // SUMO answers a simulation step after the commands that follow it in a message.
        req.subscribe_vehicle(EGO, &[var::NEXT_TLS])
            .subscribe_vehicle_context(
                EGO,
                SENSE_RANGE,
                &[
                    var::POSITION,
                    var::ANGLE,
                    var::SPEED,
                    var::ACCELERATION,
                    var::LENGTH,
                    var::WIDTH,
                ],
            )
            .simulation_step(0.0);
        let mut a = process.client.send(req)?;
        a.status(cmd::SUBSCRIBE_VEHICLE_VARIABLE)?;
        skip_subscription(&mut a)?;
        a.status(cmd::SUBSCRIBE_VEHICLE_CONTEXT)?;
        skip_subscription(&mut a)?;
        a.status(cmd::SIMULATION_STEP)?;
        let mut reported = None;
        read_step_results(&mut a, &mut self.stops, &mut self.neighbours, &mut reported)?;
        self.process = Some(process);
        self.sim_time += f64::from(self.cfg.dt);
        self.step_count = 0;
        self.stats = EpisodeStats {
            family: Family::Intersection,
            seed,
            route_length: self.route_len,
            ..Default::default()
        };
        self.comfort_filter = ComfortFilter::default();
        if control == EgoControl::Sumo {
            // Where SUMO put it: every pose of a SUMO-driven episode is SUMO's.
            let r = reported.ok_or(WorldError::EgoRemoved(self.route_len))?;
            let placed = self.ego;
            self.ego = BicycleState {
                steer: 0.0,
                yaw_rate: 0.0,
                ..self.pose_from_sumo(&r, &placed)
            };
        }
        self.track_route(s0);
        self.best_progress = self.route_s;
        self.stall_anchor = self.route_s;
        self.stall_steps = 0;
        self.time_limit_steps = ((self.route_len / 3.0 + 30.0) / self.cfg.dt) as u32;
        Ok(())
    }

    /// Removes SUMO's vehicles within 15 m of the ego's start (they would collide at once).
    fn clear_start(&mut self, process: &mut SumoProcess, at: Vec2) -> Result<(), WorldError> {
        let req = &mut self.req;
        req.clear();
        req.get(cmd::GET_VEHICLE_VARIABLE, var::ID_LIST, "");
        let mut a = process.client.send(req)?;
        a.status(cmd::GET_VEHICLE_VARIABLE)?;
        a.command_header()?;
        a.u8()?;
        a.str()?;
        let ids: Vec<String> = match a.value()? {
            Value::StringList(n) => (0..n)
                .map(|_| a.str().map(str::to_string))
                .collect::<Result<_, _>>()?,
            v => return Err(TraciError::Protocol(format!("vehicle id list: {v:?}")).into()),
        };
        if ids.is_empty() {
            return Ok(());
        }
        req.clear();
        for id in &ids {
            req.get(cmd::GET_VEHICLE_VARIABLE, var::POSITION, id);
        }
        let mut a = process.client.send(req)?;
        let mut near = Vec::new();
        for id in &ids {
            a.status(cmd::GET_VEHICLE_VARIABLE)?;
            a.command_header()?;
            a.u8()?;
            a.str()?;
            if let Value::Position(x, y) = a.value()? {
                if (Vec2::new(x as f32, y as f32) - at).norm() < 15.0 {
                    near.push(id.clone());
                }
            }
        }
        if !near.is_empty() {
            req.clear();
            for id in &near {
                req.remove_vehicle(id);
            }
            process.client.send_checked(req)?;
        }
        Ok(())
    }

    fn build_route(&mut self, route: EgoRoute) {
        let net = &self.net.network;
        self.map.clear();
        let mut ids = Vec::with_capacity(route.lanes.len());
        for &l in &route.lanes {
            let lane = &net.lanes[l];
            // Lanes of (nearly) zero length add nothing to the centreline.
            let shape: Vec<Vec2> = if lane.shape.len() >= 2 && lane.length > 0.05 {
                lane.shape.clone()
            } else {
                continue;
            };
            ids.push((self.map.add_lane(&shape, lane.width, lane.speed), l));
        }
        for w in ids.windows(2) {
            self.map.link(w[0].0, w[1].0);
        }
        let lane_ids: Vec<u16> = ids.iter().map(|&(id, _)| id).collect();
        let lights: Vec<Option<u16>> = vec![None; lane_ids.len()];
        self.map.add_path(&lane_ids, &lights);
        self.map.build_index();
        self.route_len = self.map.path_length(0);
        // Stop lines at the end of each lane whose link has a signal.
        self.stops.clear();
        let pl = self.map.path_lanes(0).to_vec();
        for (k, &(_, l)) in ids.iter().enumerate() {
            let i = route.lanes.iter().position(|&x| x == l).unwrap_or(0);
            if let Some(light) = &route.lights[i] {
                let end = pl.get(k + 1).map_or(self.route_len, |p| p.s_start);
                self.stops.push(Stop {
                    s: end,
                    light: light.clone(),
                    state: LightState::Green,
                });
            }
        }
        self.route = route;
        self.compute_speed_profile();
    }

    /// Allowed speed along the route, as the built-in world's ([`speed_profile`]).
    fn compute_speed_profile(&mut self) {
        let map = &self.map;
        speed_profile(
            map.lines.points(map.paths[0].line),
            |s| map.lanes[map.lane_at(0, s) as usize].speed_limit,
            self.cfg.expert.lateral_accel,
            self.cfg.expert.comfort_brake,
            &mut self.speed_profile,
        );
    }

    /// Allowed speed at route arc length `s`.
    pub fn allowed_speed(&self, s: f32) -> f32 {
        let i = ((s / SPACING).max(0.0) as usize).min(self.speed_profile.len().saturating_sub(1));
        self.speed_profile.get(i).copied().unwrap_or(0.0)
    }

    fn track_route(&mut self, hint: f32) {
        let c = self.ego.center(&self.cfg.vehicle);
        let (s, lat, dir) = self.map.lines.project(self.map.paths[0].line, c, hint);
        self.route_s = s;
        self.route_lat = lat;
        self.route_dir = dir;
    }

    /// Executes a plan of H ego-frame waypoints for one step (as the built-in world's
    /// `World::step`): control, dynamics, SUMO's step, progress, events, metrics, reward.
    pub fn step(&mut self, plan: &[f32]) -> Result<StepResult, WorldError> {
        if self.control != EgoControl::Deltaplan {
            return Err(WorldError::Control(
                "SUMO drives this episode's ego: step it with step_driven_by_sumo",
            ));
        }
        if !plan.iter().all(|x| x.is_finite()) {
            return Ok(self.end_non_finite());
        }
        let vp = self.cfg.vehicle;
        let before_ego = self.ego;
        let before_front = self.route_s + 0.5 * vp.length;
        let before_best = self.best_progress;
        self.waypoints.clear();
        self.waypoints
            .extend(plan.chunks_exact(2).map(|w| [w[0], w[1]]));
        let (steer, accel) =
            track_waypoints(&self.waypoints, self.ego.v, &vp, &self.cfg.controller);
        let accel = limit_jerk(accel, self.ego.accel, &self.cfg.controller, self.cfg.dt);
        let brake_forced = self.brake_forced(accel);
        bicycle_step(&mut self.ego, &vp, steer, accel, self.cfg.dt);
        if !self.ego.is_finite() {
            self.ego = before_ego;
            return Ok(self.end_non_finite());
        }
        self.sumo_step()?;
        Ok(self.account_step(&before_ego, before_front, before_best, brake_forced))
    }

    /// One step of SUMO's driver model driving the ego (after
    /// [`SumoWorld::reset_driven_by_sumo`]): SUMO steps, the ego's new pose is SUMO's, and the
    /// rest is [`SumoWorld::step`]'s: progress, events, metrics, reward. The ego's steering
    /// angle is the bicycle model's for the arc SUMO drove (`tan(steer) = wheelbase * dyaw /
    /// distance`), its yaw rate and acceleration those of the step.
    pub fn step_driven_by_sumo(&mut self) -> Result<StepResult, WorldError> {
        if self.control != EgoControl::Sumo {
            return Err(WorldError::Control(
                "deltaplan drives this episode's ego: step it with step(plan)",
            ));
        }
        let vp = self.cfg.vehicle;
        let before_ego = self.ego;
        let before_front = self.route_s + 0.5 * vp.length;
        let before_best = self.best_progress;
        let reported = self.sumo_step()?;
        let r = reported.ok_or(WorldError::EgoRemoved(self.route_len - before_front))?;
        let brake_forced = self.brake_forced(r.accel);
        self.ego = self.pose_from_sumo(&r, &before_ego);
        Ok(self.account_step(&before_ego, before_front, before_best, brake_forced))
    }

    /// The ego's state from SUMO's report, `before` being its state a step earlier: SUMO's
    /// position is the front bumper, deltaplan's reference the rear axle, `length / 2 +
    /// rear_to_center` behind it along the heading.
    fn pose_from_sumo(&self, r: &ReportedEgo, before: &BicycleState) -> BicycleState {
        let vp = &self.cfg.vehicle;
        let dt = self.cfg.dt;
        let heading = Vec2::from_angle(r.yaw);
        let pos = r.front - heading * (0.5 * vp.length + vp.rear_to_center);
        let dyaw = deltaplan_sim::geom::wrap_angle(r.yaw - before.yaw);
        let distance = (pos - before.pos).norm();
        let steer = if distance > 1e-3 {
            (vp.wheelbase * dyaw / distance)
                .atan()
                .clamp(-vp.max_steer, vp.max_steer)
        } else {
            before.steer
        };
        BicycleState {
            pos,
            yaw: r.yaw,
            v: r.v.max(0.0),
            steer,
            accel: r.accel,
            yaw_rate: dyaw / dt,
        }
    }

    /// Everything of a step after the ego moved and SUMO stepped: progress, events, metrics,
    /// reward (the same for either driver).
    fn account_step(
        &mut self,
        before_ego: &BicycleState,
        before_front: f32,
        before_best: f32,
        brake_forced: bool,
    ) -> StepResult {
        let vp = self.cfg.vehicle;
        self.sim_time += f64::from(self.cfg.dt);
        self.step_count += 1;
        self.track_route(self.route_s);
        self.best_progress = self.best_progress.max(self.route_s.min(self.route_len));
        if self.best_progress > self.stall_anchor + 0.5 {
            self.stall_anchor = self.best_progress;
            self.stall_steps = 0;
        } else {
            self.stall_steps += 1;
        }
        let end = self.events(before_ego, before_front);
        let progress_gain = self.best_progress - before_best;
        let dt = self.cfg.dt;
        let raw = comfort_violations(before_ego, &self.ego, dt, self.step_count > 1);
        let filtered = self.comfort_filter.push(&self.ego, dt);
        for (i, c) in self.stats.comfort_steps.iter_mut().enumerate() {
            *c += u32::from(filtered >> i & 1);
        }
        self.stats.comfort_violation_steps += u32::from(filtered != 0);
        let lane = self.map.lanes[self.map.lane_at(0, self.route_s) as usize];
        let outside_lane = self.route_lat.abs() + 0.5 * vp.width > 0.5 * lane.width + 0.3;
        if outside_lane {
            self.stats.outside_lane_distance += progress_gain;
        }
        self.stats.steps += 1;
        self.stats.speed_sum += self.ego.v;
        let v = self.ego.v;
        self.stats.overspeed_sum += (v - lane.speed_limit).max(0.0);
        if Vec2::from_angle(self.ego.yaw).dot(self.route_dir) < 0.0 {
            self.stats.wrong_way_distance += 0.5 * (before_ego.v + v) * dt;
        }
        let ttc = nuplan_score::TTC_BOUND;
        if v > 0.0 {
            let lead = self.leader(v * ttc, false);
            if v > lead.v && lead.gap < (v - lead.v) * ttc {
                self.stats.ttc_violation_steps += 1;
            }
        }
        if brake_forced && self.ego.accel < nuplan_comfort::MIN_LON_ACCEL {
            self.stats.forced_brake_steps += 1;
        }
        let rc = &self.cfg.reward;
        let lead = if rc.ttc_threshold > 0.0 {
            self.leader((v * rc.ttc_threshold * 2.0).max(10.0), false)
        } else {
            Leader::NONE
        };
        let events = StepEvents {
            end,
            progress_gain,
            route_length: self.route_len,
            speed: v,
            speed_limit: lane.speed_limit,
            comfort_violations: raw,
            comfort_flagged: filtered != 0,
            outside_lane,
            lead_gap: lead.gap,
            lead_speed: lead.v,
        };
        let reward = deltaplan_sim::reward::compute(&events, rc);
        if end != EndReason::Running {
            self.stats.end = end;
            self.stats.route_completion = if end == EndReason::RouteCompleted {
                100.0
            } else {
                self.route_completion()
            };
        }
        StepResult { reward, end }
    }

    /// Tells SUMO the ego's pose (when deltaplan drives it), steps it, and reads the traffic
    /// around the ego, its next lights and the ego as SUMO has it: one round trip.
    fn sumo_step(&mut self) -> Result<Option<ReportedEgo>, WorldError> {
        let vp = self.cfg.vehicle;
        let h = Vec2::from_angle(self.ego.yaw);
        let front = self.ego.center(&vp) + h * (0.5 * vp.length);
        let process = self
            .process
            .as_mut()
            .ok_or(WorldError::Traci(TraciError::Closed))?;
        self.req.clear();
        if self.control == EgoControl::Deltaplan {
            self.req.move_to_xy(EGO, &ego_pose(front, self.ego.yaw));
        }
        self.req.simulation_step(0.0);
        let mut a = process.client.send(&self.req)?;
        let mut reported = None;
        read_step_answer(
            &mut a,
            self.control,
            &mut self.stops,
            &mut self.neighbours,
            &mut reported,
        )?;
        Ok(reported)
    }

    /// Collision, off-road, red light; else route completed, blocked or out of time.
    fn events(&mut self, before_ego: &BicycleState, before_front: f32) -> EndReason {
        let vp = self.cfg.vehicle;
        let ego_box = self.ego.bbox(&vp);
        if let Some(other) = self.neighbours.iter().find(|a| {
            ego_box.overlaps(&OrientedBox {
                center: a.center,
                heading: a.heading,
                half_length: 0.5 * a.length,
                half_width: 0.5 * a.width,
            })
        }) {
            self.stats.collisions_vehicle += 1;
            let heading = Vec2::from_angle(self.ego.yaw);
            let rel = other.center - ego_box.center;
            let rear_ended =
                rel.dot(heading) < 0.0 && rel.dot(heading.perp()).abs() < 0.5 * vp.width;
            if rear_ended || before_ego.v < STANDSTILL_SPEED {
                self.stats.collisions_vehicle_not_at_fault += 1;
            }
            return EndReason::CollisionVehicle;
        }
        if !ego_box.corners().iter().all(|&c| self.net.is_drivable(c)) {
            self.stats.offroad += 1;
            return EndReason::OffRoad;
        }
        let front = self.route_s + 0.5 * vp.length;
        if self
            .stops
            .iter()
            .any(|st| before_front < st.s && front >= st.s && st.state == LightState::Red)
        {
            self.stats.red_lights += 1;
            return EndReason::RedLight;
        }
        if self.best_progress >= self.route_len - self.cfg.route_end_tolerance
            || self.sumo_ends_trip_next_step()
        {
            EndReason::RouteCompleted
        } else if self.stall_steps as f32 * self.cfg.dt >= self.cfg.blocked_seconds {
            self.stats.blocked = true;
            EndReason::Blocked
        } else if self.step_count >= self.time_limit_steps {
            self.stats.timeout = true;
            EndReason::TimeLimit
        } else {
            EndReason::Running
        }
    }

    /// Whether SUMO, driving the ego, may end its trip within the next step: SUMO removes a
    /// vehicle whose front bumper reaches the end of its route's last lane (measured along
    /// SUMO's lane lengths, which differ from the shapes' by up to a metre or two), so the
    /// episode ends completed before, once the front is within a step's travel and
    /// `route_end_tolerance` of the end. Never for a deltaplan-driven ego (SUMO mirrors it).
    fn sumo_ends_trip_next_step(&self) -> bool {
        let vp = &self.cfg.vehicle;
        let front = self.route_s + 0.5 * vp.length;
        let reach = (self.ego.v + vp.max_accel * self.cfg.dt) * self.cfg.dt;
        self.control == EgoControl::Sumo
            && front + reach + self.cfg.route_end_tolerance >= self.route_len
    }

    fn end_non_finite(&mut self) -> StepResult {
        let lane = self.map.lanes[self.map.lane_at(0, self.route_s) as usize];
        let events = StepEvents::non_finite(self.route_len, self.ego.v, lane.speed_limit);
        self.stats.end = EndReason::NonFinite;
        self.stats.route_completion = self.route_completion();
        StepResult {
            reward: deltaplan_sim::reward::compute(&events, &self.cfg.reward),
            end: EndReason::NonFinite,
        }
    }

    fn brake_forced(&self, accel: f32) -> bool {
        let comfort_decel = -nuplan_comfort::MIN_LON_ACCEL;
        if accel >= -comfort_decel {
            return false;
        }
        let v = self.ego.v;
        let lead = self.leader(v * v / (2.0 * comfort_decel) + 1.0, false);
        v > lead.v && (v - lead.v).powi(2) / (2.0 * lead.gap.max(0.1)) >= comfort_decel
    }

    /// The nearest vehicle ahead on the route within `horizon` metres (bumper to bumper), and,
    /// with `obey_lights`, a stop line at red, or at yellow when stopping needs no more than
    /// the expert's yellow braking.
    pub fn leader(&self, horizon: f32, obey_lights: bool) -> Leader {
        let vp = &self.cfg.vehicle;
        let line = self.map.paths[0].line;
        let lines = &self.map.lines;
        let (s, d) = (self.route_s, self.route_lat);
        let mut best = Leader::NONE;
        for a in &self.neighbours {
            let c = self.ego.center(vp);
            let hint = s + (a.center - c).dot(self.route_dir);
            let (sa, lat, t) = lines.project(line, a.center, hint);
            let ds = sa - s;
            if ds <= 0.0 || ds > horizon + a.length {
                continue;
            }
            let ext_lat =
                0.5 * a.length * t.cross(a.heading).abs() + 0.5 * a.width * t.dot(a.heading).abs();
            if (lat - d).abs() > 0.5 * vp.width + ext_lat + 0.3 {
                continue;
            }
            let ext_lon =
                0.5 * a.length * t.dot(a.heading).abs() + 0.5 * a.width * t.cross(a.heading).abs();
            let gap = ds - 0.5 * vp.length - ext_lon;
            // A car overlapping the ego's length is beside it, not ahead.
            if gap < best.gap && gap >= -1.0 {
                best = Leader {
                    gap,
                    v: a.v * a.heading.dot(t),
                };
            }
        }
        if obey_lights {
            let v = self.ego.v;
            for st in &self.stops {
                let gap = st.s - (s + 0.5 * vp.length);
                if gap < -0.5 || gap > horizon || gap >= best.gap {
                    continue;
                }
                let must_stop = match st.state {
                    LightState::Green => false,
                    LightState::Red => true,
                    LightState::Yellow => gap > v * v / (2.0 * self.cfg.expert.yellow_brake),
                };
                if must_stop {
                    best = Leader {
                        gap: gap.max(0.0),
                        v: 0.0,
                    };
                }
            }
        }
        best
    }

    /// A route-following expert built on the built-in expert's logic (IDM towards the
    /// route's allowed speed behind the vehicle or stop line ahead, a kinematic braking floor,
    /// the centreline converging from the current offset). Not SUMO's own driver model.
    pub fn expert_plan(&self, out: &mut [f32]) {
        let e = &self.cfg.expert;
        let vp = &self.cfg.vehicle;
        let v = self.ego.v;
        let s = self.route_s;
        let lead = self.leader((v * 4.0 + 25.0).min(100.0), true);
        let v_des = self.allowed_speed(s + 0.5 * v).min(self.allowed_speed(s));
        let idm = e.idm(v_des.max(0.5));
        let mut a = idm.accel(v, lead.gap, lead.v, vp.max_brake);
        let floor = if lead.gap.is_finite() && v > lead.v {
            (v - lead.v).powi(2) / (2.0 * (lead.gap - 1.0).max(0.2))
        } else {
            0.0
        };
        if floor > 1.5 {
            a = a.min(-floor * 1.2);
        }
        a = a.max(-e.max_comfort_decel);
        if a < 0.0 {
            a = a.max(-v / 0.8);
        }
        if floor > e.max_comfort_decel {
            a = a.min(-floor);
        }
        let a = a.clamp(-vp.max_brake, e.max_accel);
        let line = self.map.paths[0].line;
        let center = self.ego.center(vp);
        let heading = Vec2::from_angle(self.ego.yaw);
        let tau = e.lateral_tau;
        for (j, wp) in out.chunks_exact_mut(2).enumerate() {
            let t = (j + 1) as f32 * self.cfg.controller.waypoint_dt;
            let ds = if v + a * t >= 0.0 {
                v * t + 0.5 * a * t * t
            } else {
                v * v / (2.0 * -a)
            };
            let (q, tan) = self.map.lines.sample(line, s + ds);
            let lat = self.route_lat * (-ds / (tau * v.max(5.0))).exp();
            let p = (q + tan.perp() * lat).to_frame(center, heading);
            wp[0] = p.x;
            wp[1] = p.y;
        }
    }

    /// Writes the observation in the built-in world's layout, by the built-in world's code
    /// ([`deltaplan_sim::obs`]).
    pub fn observe(&self, out: &mut [f32]) {
        debug_assert_eq!(out.len(), OBS_DIM);
        out.fill(0.0);
        let e = EgoOnRoute {
            ego: &self.ego,
            vehicle: &self.cfg.vehicle,
            map: &self.map,
            path: 0,
            lane: self.map.lane_at(0, self.route_s) as usize,
            route_s: self.route_s,
            route_lat: self.route_lat,
            route_dir: self.route_dir,
            allowed_speed: self.allowed_speed(self.route_s),
            lanes_beside: self.lanes_beside(),
        };
        write_ego_route(&e, out);
        write_nearest(&e, self.neighbours.len(), out, |i| {
            let a = &self.neighbours[i];
            Some(Nearby {
                pos: a.center,
                heading: a.heading,
                vel: a.heading * a.v,
                accel: a.accel,
                length: a.length,
                width: a.width,
                is_static: false,
            })
        });
        let front = self.route_s + 0.5 * self.cfg.vehicle.length;
        let next_light = self
            .stops
            .iter()
            .find(|st| st.s >= front - 0.5 && st.s - front < 80.0)
            .map(|st| (st.state, st.s - front));
        let lead = self.leader(80.0, true);
        write_next_light(out, next_light);
        write_leader(
            out,
            lead.gap
                .is_finite()
                .then_some((lead.gap, lead.v - self.ego.v)),
        );
        // SUMO's networks name no merge point for the route (a lane that ends is not mapped).
        write_merge(out, None);
    }

    /// Same-direction lanes to the left and right of the ego's current route lane (none inside
    /// junctions).
    fn lanes_beside(&self) -> (u32, u32) {
        let net = &self.net.network;
        let lane_id = self.map.lane_at(0, self.route_s) as usize;
        let Some(&l) = self
            .route
            .lanes
            .iter()
            .filter(|&&l| net.lanes[l].length > 0.05)
            .nth(lane_id)
        else {
            return (0, 0);
        };
        let lane = &net.lanes[l];
        let edge = &net.edges[lane.edge];
        if edge.internal {
            return (0, 0);
        }
        // Lanes cars may use, by SUMO's index (0 = rightmost): sidewalks are not lanes here.
        let beside = |side: fn(u32, u32) -> bool| {
            edge.lanes
                .iter()
                .filter(|&&k| net.lanes[k].cars && side(net.lanes[k].index, lane.index))
                .count() as u32
        };
        (beside(|k, ego| k > ego), beside(|k, ego| k < ego))
    }

    /// Where SUMO has vehicle `id` now: its front bumper and yaw (for checks; not on the
    /// stepping path).
    pub fn sumo_pose(&mut self, id: &str) -> Result<(Vec2, f32), WorldError> {
        let process = self
            .process
            .as_mut()
            .ok_or(WorldError::Traci(TraciError::Closed))?;
        self.req.clear();
        self.req
            .get(cmd::GET_VEHICLE_VARIABLE, var::POSITION, id)
            .get(cmd::GET_VEHICLE_VARIABLE, var::ANGLE, id);
        let mut a = process.client.send(&self.req)?;
        let mut read = || -> Result<Value, TraciError> {
            a.status(cmd::GET_VEHICLE_VARIABLE)?;
            a.command_header()?;
            a.u8()?;
            a.str()?;
            a.value()
        };
        match (read()?, read()?) {
            (Value::Position(x, y), Value::Double(angle)) => {
                Ok((Vec2::new(x as f32, y as f32), yaw_from_sumo(angle)))
            }
            other => Err(TraciError::Protocol(format!("pose of {id}: {other:?}")).into()),
        }
    }

    /// Ends the SUMO process: the next reset starts a new one (after a fault, the old one is
    /// not to be trusted).
    /// Whether the last [`SumoWorld::reset`] started a new SUMO process (rather than
    /// replacing the ego in the running one's warm traffic).
    pub fn started_process(&self) -> bool {
        self.ego_routes == 1
    }

    pub fn kill_sumo(&mut self) {
        self.process = None;
    }
}

/// The ego's SUMO pose: front bumper `front`, heading `yaw`, kept on its route's lanes.
fn ego_pose(front: Vec2, yaw: f32) -> XyPose {
    XyPose {
        x: f64::from(front.x),
        y: f64::from(front.y),
        angle: sumo_angle(yaw),
        keep_route: 1,
        match_threshold: 100.0,
    }
}

/// Skips one subscription result.
fn skip_subscription(a: &mut Reader) -> Result<(), TraciError> {
    let (_, len) = a.command_header()?;
    for _ in 0..len {
        a.u8()?;
    }
    Ok(())
}

/// Reads the answer to [`SumoWorld::sumo_step`]'s request (move the ego, when deltaplan drives
/// it, then step): the statuses, then every subscription result of the step, and nothing after
/// them. What does not follow the protocol, or a non-finite number, is a protocol error naming
/// it (the world then restarts SUMO, as for a crash).
fn read_step_answer(
    a: &mut Reader,
    control: EgoControl,
    stops: &mut [Stop],
    neighbours: &mut Vec<Neighbour>,
    ego: &mut Option<ReportedEgo>,
) -> Result<(), TraciError> {
    if control == EgoControl::Deltaplan {
        a.status(cmd::SET_VEHICLE_VARIABLE)?;
    }
    a.status(cmd::SIMULATION_STEP)?;
    read_step_results(a, stops, neighbours, ego)?;
    if !a.is_empty() {
        return Err(TraciError::Protocol(
            "bytes after the step's subscription results".into(),
        ));
    }
    Ok(())
}

/// Reads a simulation step's result: the number of subscription results, then each of them.
fn read_step_results(
    a: &mut Reader,
    stops: &mut [Stop],
    neighbours: &mut Vec<Neighbour>,
    ego: &mut Option<ReportedEgo>,
) -> Result<(), TraciError> {
    let n = a.i32()?;
    neighbours.clear();
    *ego = None;
    for _ in 0..n {
        read_subscription(a, stops, neighbours, ego)?;
    }
    Ok(())
}

/// Reads one subscription result: the ego's next lights (into the route's stops) or the
/// vehicles around it (into `neighbours`; the ego itself, which its own context subscription
/// lists, into `ego`).
fn read_subscription(
    a: &mut Reader,
    stops: &mut [Stop],
    neighbours: &mut Vec<Neighbour>,
    ego: &mut Option<ReportedEgo>,
) -> Result<(), TraciError> {
    let (id, _) = a.command_header()?;
    let object = a.str()?;
    match id {
        cmd::RESPONSE_SUBSCRIBE_VEHICLE_VARIABLE => {
            let nvars = a.u8()?;
            for _ in 0..nvars {
                let variable = a.u8()?;
                let status = a.u8()?;
                let v = a.value()?;
                if status != 0 {
                    return Err(TraciError::Protocol(format!(
                        "subscription of {object} variable 0x{variable:02x} failed: {v:?}"
                    )));
                }
                if variable == var::NEXT_TLS {
                    read_next_tls(a, v, stops)?;
                }
            }
        }
        cmd::RESPONSE_SUBSCRIBE_VEHICLE_CONTEXT => {
            let _domain = a.u8()?;
            let nvars = a.u8()?;
            let nobjects = a.i32()?;
            for _ in 0..nobjects {
                let vid = a.str()?;
                let mut n = Neighbour::default();
                let (mut front, mut yaw) = (Vec2::ZERO, 0.0);
                for _ in 0..nvars {
                    let variable = a.u8()?;
                    let status = a.u8()?;
                    let v = a.value()?;
                    let finite = match v {
                        Value::Position(x, y) => x.is_finite() && y.is_finite(),
                        Value::Double(d) => d.is_finite(),
                        _ => true,
                    };
                    if !finite {
                        return Err(TraciError::Protocol(format!(
                            "vehicle {vid} variable 0x{variable:02x} is not finite: {v:?}"
                        )));
                    }
                    match (status, variable, v) {
                        (0, var::POSITION, Value::Position(x, y)) => {
                            front = Vec2::new(x as f32, y as f32)
                        }
                        (0, var::ANGLE, Value::Double(d)) => yaw = yaw_from_sumo(d),
                        (0, var::SPEED, Value::Double(d)) => n.v = d as f32,
                        (0, var::ACCELERATION, Value::Double(d)) => n.accel = d as f32,
                        (0, var::LENGTH, Value::Double(d)) => n.length = d as f32,
                        (0, var::WIDTH, Value::Double(d)) => n.width = d as f32,
                        _ => {}
                    }
                }
                if vid == EGO {
                    *ego = Some(ReportedEgo {
                        front,
                        yaw,
                        v: n.v,
                        accel: n.accel,
                    });
                } else {
                    n.heading = Vec2::from_angle(yaw);
                    n.center = front - n.heading * (0.5 * n.length);
                    neighbours.push(n);
                }
            }
        }
        other => {
            return Err(TraciError::Protocol(format!(
                "unexpected subscription answer 0x{other:02x}"
            )))
        }
    }
    Ok(())
}

/// The next-lights compound: a count, then per light its id, link index, distance and state
/// character; states go to the matching stops of the route.
fn read_next_tls(a: &mut Reader, v: Value, stops: &mut [Stop]) -> Result<(), TraciError> {
    let Value::Compound(_) = v else {
        return Err(TraciError::Protocol(format!("next lights: {v:?}")));
    };
    let count = match a.value()? {
        Value::Int(n) => n.max(0),
        v => return Err(TraciError::Protocol(format!("next lights count: {v:?}"))),
    };
    for _ in 0..count {
        let (Value::Str(id), Value::Int(index), Value::Double(_dist), Value::Byte(state)) =
            (a.value()?, a.value()?, a.value()?, a.value()?)
        else {
            return Err(TraciError::Protocol("next lights entry".into()));
        };
        let state = match state as u8 {
            b'r' | b'R' | b'u' => LightState::Red,
            b'y' | b'Y' => LightState::Yellow,
            _ => LightState::Green,
        };
        if let Some(st) = stops
            .iter_mut()
            .find(|st| st.light.0 == id && st.light.1 == index as u32)
        {
            st.state = state;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traci::{
        put_compound, put_str, put_typed_f64, put_typed_i32, put_typed_str, Request,
    };
    use deltaplan_stdx::fuzz::fuzz;

    /// A status block: command `id` accepted, with an empty message.
    fn status(answer: &mut Request, id: u8) {
        answer.command(id, |c| {
            c.push(0);
            put_str(c, "");
        });
    }

    /// What SUMO answers a step of the world: both statuses, then the ego's subscription (its
    /// next lights: J1 link 0 red, J2 link 1 green) and its context subscription (the ego and
    /// two vehicles: heading east at (10, 0), 5 m long; heading north at (0, 20), 4 m long).
    fn step_answer() -> Vec<u8> {
        let mut r = Request::default();
        status(&mut r, cmd::SET_VEHICLE_VARIABLE);
        status(&mut r, cmd::SIMULATION_STEP);
        let mut m = r.message();
        m.extend_from_slice(&2i32.to_be_bytes());
        let mut subs = Request::default();
        subs.command(cmd::RESPONSE_SUBSCRIBE_VEHICLE_VARIABLE, |c| {
            put_str(c, EGO);
            c.extend_from_slice(&[1, var::NEXT_TLS, 0]);
            put_compound(c, 9);
            put_typed_i32(c, 2);
            for (id, link, state) in [("J1", 0, b'r'), ("J2", 1, b'G')] {
                put_typed_str(c, id);
                put_typed_i32(c, link);
                put_typed_f64(c, 30.0);
                c.extend_from_slice(&[crate::traci::ty::BYTE, state]);
            }
        });
        subs.command(cmd::RESPONSE_SUBSCRIBE_VEHICLE_CONTEXT, |c| {
            put_str(c, EGO);
            c.extend_from_slice(&[0xa4, 3]);
            c.extend_from_slice(&3i32.to_be_bytes());
            for (id, x, y, angle, length) in [
                (EGO, 0.0, 0.0, 90.0, 4.5),
                ("car_a", 10.0, 0.0, 90.0, 5.0),
                ("car_b", 0.0, 20.0, 0.0, 4.0),
            ] {
                put_str(c, id);
                c.extend_from_slice(&[var::POSITION, 0, crate::traci::ty::POSITION_2D]);
                c.extend_from_slice(&f64::to_be_bytes(x));
                c.extend_from_slice(&f64::to_be_bytes(y));
                c.extend_from_slice(&[var::ANGLE, 0]);
                put_typed_f64(c, angle);
                c.extend_from_slice(&[var::LENGTH, 0]);
                put_typed_f64(c, length);
            }
        });
        // The statuses' message already carries the length prefix: fix it for the whole.
        m.extend_from_slice(&subs.message()[4..]);
        let total = m.len() as u32;
        m[..4].copy_from_slice(&total.to_be_bytes());
        m
    }

    fn stops() -> Vec<Stop> {
        let stop = |id: &str, link, state| Stop {
            s: 40.0,
            light: (id.to_string(), link),
            state,
        };
        vec![
            stop("J1", 0, LightState::Green),
            stop("J2", 1, LightState::Red),
            stop("J3", 0, LightState::Yellow),
        ]
    }

    /// Reads a whole message (length prefix included) as `sumo_step` does.
    fn read_message(
        m: &[u8],
        stops: &mut [Stop],
        neighbours: &mut Vec<Neighbour>,
    ) -> Result<(), TraciError> {
        let prefix = m
            .get(..4)
            .ok_or_else(|| TraciError::Protocol("no length prefix".into()))?;
        let n = crate::traci::answer_len([prefix[0], prefix[1], prefix[2], prefix[3]])?;
        if n != m.len() - 4 {
            return Err(TraciError::Protocol(format!(
                "answer announces {n} bytes, {} came",
                m.len() - 4
            )));
        }
        let mut ego = None;
        read_step_answer(
            &mut Reader::new(&m[4..]),
            EgoControl::Deltaplan,
            stops,
            neighbours,
            &mut ego,
        )
    }

    #[test]
    fn a_step_answer_gives_the_neighbours_and_the_lights() {
        let (mut st, mut nb) = (stops(), vec![Neighbour::default()]);
        read_message(&step_answer(), &mut st, &mut nb).unwrap();
        // The ego's own row is SUMO's report of it (front bumper, heading, speed,
        // acceleration), what a SUMO-driven world reads back.
        let mut ego = None;
        let body = &step_answer()[4..];
        let mut r = Reader::new(body);
        r.status(cmd::SET_VEHICLE_VARIABLE).unwrap();
        r.status(cmd::SIMULATION_STEP).unwrap();
        read_step_results(&mut r, &mut stops(), &mut Vec::new(), &mut ego).unwrap();
        let ego = ego.unwrap();
        assert_eq!((ego.front, ego.v, ego.accel), (Vec2::ZERO, 0.0, 0.0));
        assert!(ego.yaw.abs() < 1e-6, "{ego:?}");
        // The ego is left out; a SUMO position is the front bumper: the centre is half a
        // length behind it, along the heading (SUMO 90 degrees = east, 0 = north).
        assert_eq!(nb.len(), 2);
        let close = |a: Vec2, b: Vec2| (a - b).norm() < 1e-5;
        assert!(close(nb[0].center, Vec2::new(7.5, 0.0)), "{:?}", nb[0]);
        assert!(close(nb[0].heading, Vec2::new(1.0, 0.0)), "{:?}", nb[0]);
        assert!(close(nb[1].center, Vec2::new(0.0, 18.0)), "{:?}", nb[1]);
        assert_eq!((nb[0].length, nb[1].length), (5.0, 4.0));
        // Light states reach the matching stops only.
        let states: Vec<LightState> = st.iter().map(|s| s.state).collect();
        assert_eq!(
            states,
            [LightState::Red, LightState::Green, LightState::Yellow]
        );
    }

    #[test]
    fn a_corrupt_length_or_a_non_finite_position_is_a_protocol_error() {
        let (mut st, mut nb) = (stops(), Vec::new());
        let err = crate::traci::answer_len(u32::MAX.to_be_bytes()).unwrap_err();
        assert!(err.to_string().contains("more than"), "{err}");
        let mut m = step_answer();
        let nan = f64::NAN.to_be_bytes();
        let at = m
            .windows(8)
            .rposition(|w| w == 20.0f64.to_be_bytes())
            .unwrap();
        m[at..at + 8].copy_from_slice(&nan);
        let err = read_message(&m, &mut st, &mut nb).unwrap_err();
        assert!(
            err.to_string().contains("car_b") && err.to_string().contains("not finite"),
            "{err}"
        );
        let mut m = step_answer();
        m.push(0);
        let total = m.len() as u32;
        m[..4].copy_from_slice(&total.to_be_bytes());
        let err = read_message(&m, &mut st, &mut nb).unwrap_err();
        assert!(err.to_string().contains("bytes after"), "{err}");
    }

    fn fuzz_step_answers(n: u64) {
        let named = |m: &str| m.starts_with("TraCI protocol: ") || m.starts_with("SUMO refused");
        let (mut st, mut nb) = (stops(), Vec::new());
        let parse = |m: &[u8]| read_message(m, &mut st, &mut nb).map_err(|e| e.to_string());
        fuzz(&[step_answer()], n, 13, parse, named).print_and_check("TraCI step answers");
        // The body alone, past the length check most mutants of a whole message fail.
        let (mut st, mut nb) = (stops(), Vec::new());
        let parse = |b: &[u8]| {
            let mut ego = None;
            read_step_answer(
                &mut Reader::new(b),
                EgoControl::Deltaplan,
                &mut st,
                &mut nb,
                &mut ego,
            )
            .map_err(|e| e.to_string())
        };
        fuzz(&[step_answer()[4..].to_vec()], n, 14, parse, named)
            .print_and_check("TraCI step answer bodies");
    }

    #[test]
    fn damaged_step_answers_are_protocol_errors_without_panics() {
        fuzz_step_answers(20_000);
    }

    #[test]
    #[ignore = "long: DELTAPLAN_FUZZ_INPUTS=N"]
    fn fuzz_step_answers_long() {
        let n = std::env::var("DELTAPLAN_FUZZ_INPUTS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1_000_000);
        fuzz_step_answers(n);
    }
}
