//! The observation: one fixed-size f32 vector per ego, in the ego frame (x forward, y left),
//! every value scaled to roughly [-1, 1] (a few can exceed it, never by orders of magnitude).
//!
//! | name | len | content |
//! |---|---|---|
//! | `ego` | 8 | speed/10, accel/4, steer/max_steer, yaw_rate/0.5, lateral offset from route / half lane width, heading error vs route / 0.5, lane speed limit/10, allowed speed (limit and bends ahead)/10 |
//! | `route` | 20 | route centreline points at 2,4,7,10,14,19,25,32,40,50 m ahead: (x/50, y/20) each |
//! | `lane` | 4 | distance to left and right edge of the route lane / lane width; to the left and right edge of the road (same-direction lanes) / lane width, clamped to 4 |
//! | `agents` | 8 x 12 | the 8 nearest vehicles and obstacles within 60 m, nearest first: present, x/50, y/50, cos and sin of relative heading, relative vx/10, vy/10 (ego frame), length/5, width/2.5, static flag, on-route-ahead flag, own longitudinal acceleration/4 (a driver braking to let the ego in shows here); zeros when absent |
//! | `light` | 5 | next light on the route within 80 m: one-hot none/green/yellow/red, distance to its stop line/50 (1 when none) |
//! | `leader` | 3 | nearest obstacle ahead on the route (vehicle, obstacle, or stop line demanding a stop) within 80 m: gap/50 (clamped to 1.6, 1.6 when none), (leader speed - ego speed)/10, present |
//! | `merge` | 6 | where the route's lane ends in a lane with traffic, up to 5 m past that point: distance from the ego's front to the merge point/100 (clamped to 1.6, 1.6 when none), present; the traffic of that lane mapped onto the route by its distance to the merge point, the nearest vehicle ahead and the nearest behind within 80 m: bumper gap/50 (clamped to -0.2..1.6, 1.6 when none), (its speed - ego speed)/10 |

use crate::config::VehicleParams;
use crate::geom::{wrap_angle, Vec2};
use crate::road::{Lane, LaneId, RoadMap};
use crate::scenario::MergeLink;
use crate::traffic::LightState;
use crate::vehicle::BicycleState;
use crate::world::{LeaderQuery, StopLines, World};

pub const K_AGENTS: usize = 8;
pub const AGENT_FEATURES: usize = 12;
pub const ROUTE_SAMPLES: [f32; 10] = [2.0, 4.0, 7.0, 10.0, 14.0, 19.0, 25.0, 32.0, 40.0, 50.0];

/// Named slices of the observation vector: (name, start, len).
pub const LAYOUT: [(&str, usize, usize); 7] = [
    ("ego", 0, 8),
    ("route", 8, 20),
    ("lane", 28, 4),
    ("agents", 32, K_AGENTS * AGENT_FEATURES),
    ("light", 32 + K_AGENTS * AGENT_FEATURES, 5),
    ("leader", 37 + K_AGENTS * AGENT_FEATURES, 3),
    ("merge", MERGE_BASE, 6),
];

/// Length of the observation vector.
pub const OBS_DIM: usize = 46 + K_AGENTS * AGENT_FEATURES;

/// Start of the `merge` slice.
const MERGE_BASE: usize = 40 + K_AGENTS * AGENT_FEATURES;

/// Start and length of a named slice of the observation.
pub fn slice(name: &str) -> Option<(usize, usize)> {
    LAYOUT
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|&(_, s, l)| (s, l))
}

/// Writes the observation of `w` into `out` (length [`OBS_DIM`]).
pub fn observe(w: &World, out: &mut [f32]) {
    debug_assert_eq!(out.len(), OBS_DIM);
    out.fill(0.0);
    // Same-direction lanes beside the route lane, walking `next` (left or right), at most 5.
    let lane_id = w.map.lane_at(w.route, w.route_s) as usize;
    let lane = w.map.lanes[lane_id];
    let count = |next: fn(&Lane) -> Option<LaneId>| {
        let mut n = 0;
        let mut l = next(&lane);
        while let Some(id) = l {
            n += 1;
            l = next(&w.map.lanes[id as usize]);
            if n > 4 {
                break;
            }
        }
        n
    };
    let e = EgoOnRoute {
        ego: &w.ego,
        vehicle: &w.cfg.vehicle,
        map: &w.map,
        path: w.route,
        lane: lane_id,
        route_s: w.route_s,
        route_lat: w.route_lat,
        route_dir: w.route_dir,
        allowed_speed: w.allowed_speed(w.route_s),
        lanes_beside: (count(|l| l.left), count(|l| l.right)),
    };
    write_ego_route(&e, out);
    let n_agents = w.agents.len();
    write_nearest(&e, n_agents + w.statics.len(), out, |i| {
        if i < n_agents {
            let a = &w.agents[i];
            a.active.then(|| Nearby {
                pos: a.pos,
                heading: a.heading,
                vel: a.heading * a.v,
                accel: a.accel,
                length: a.length,
                width: a.width,
                is_static: false,
            })
        } else {
            let b = &w.statics[i - n_agents];
            Some(Nearby {
                pos: b.center,
                heading: b.heading,
                vel: Vec2::ZERO,
                accel: 0.0,
                length: 2.0 * b.half_length,
                width: 2.0 * b.half_width,
                is_static: true,
            })
        }
    });
    let front = w.route_s + 0.5 * w.cfg.vehicle.length;
    let next_light = w
        .map
        .path_stops(w.route)
        .iter()
        .find(|st| st.s >= front - 0.5 && st.s - front < 80.0)
        .map(|st| (w.lights[st.light as usize].state(w.time()), st.s - front));
    write_next_light(out, next_light);
    let lead = w.leader_on_path(&LeaderQuery {
        stop_lines: StopLines::Obey {
            yellow_decel: w.cfg.expert.yellow_brake,
        },
        ..w.ego_leader_query(80.0)
    });
    write_leader(
        out,
        lead.gap.is_finite().then_some((lead.gap, lead.v - w.ego.v)),
    );
    write_merge(out, merge_view(w).as_ref());
}

/// The merge ahead of the built-in world's ego, as the `merge` slice reads it: the merge point
/// and the main road's traffic mapped onto the route ([`crate::scenario::MergeLink`]), from
/// what any vehicle's sensors see (positions and speeds, not whether a driver will yield).
fn merge_view(w: &World) -> Option<MergeView> {
    let m = w.merge?;
    let front = w.route_s + 0.5 * w.cfg.vehicle.length;
    let to_merge = m.s_route_merge - front;
    if to_merge < -MergeLink::PAST {
        return None;
    }
    let mut view = MergeView {
        distance: to_merge,
        ahead: None,
        behind: None,
    };
    for a in w
        .agents
        .iter()
        .filter(|a| a.active && a.path == m.main_path)
    {
        let rel = m.ego_ahead_by(w.route_s, a.s);
        let gap = rel.abs() - 0.5 * (a.length + w.cfg.vehicle.length);
        if gap > MERGE_RANGE {
            continue;
        }
        let slot = if rel < 0.0 {
            &mut view.ahead
        } else {
            &mut view.behind
        };
        if slot.is_none_or(|(g, _)| gap < g) {
            *slot = Some((gap, a.v - w.ego.v));
        }
    }
    Some(view)
}

/// How far along the route the `merge` slice looks for the merging lane's traffic, metres.
const MERGE_RANGE: f32 = 80.0;

/// The ego on its route, as the `ego`, `route` and `lane` slices read it: what a world
/// supplies for [`write_ego_route`] and [`write_nearest`] (the built-in world here, SUMO's world
/// in `deltaplan_sumo`), so both write one layout by one code.
pub struct EgoOnRoute<'a> {
    pub ego: &'a BicycleState,
    pub vehicle: &'a VehicleParams,
    /// The route as a road map; `path` is the route's path in it.
    pub map: &'a RoadMap,
    pub path: usize,
    /// The lane of `map` the route is on at `route_s` ([`RoadMap::lane_at`]).
    pub lane: usize,
    pub route_s: f32,
    pub route_lat: f32,
    pub route_dir: Vec2,
    /// The speed allowed at `route_s` (limit and bends ahead).
    pub allowed_speed: f32,
    /// Same-direction lanes to the left and to the right of the route's lane.
    pub lanes_beside: (u32, u32),
}

/// A vehicle or obstacle near the ego, as the `agents` slice reads it.
pub struct Nearby {
    pub pos: Vec2,
    pub heading: Vec2,
    pub vel: Vec2,
    /// Longitudinal acceleration, m/s^2 (0 for a static obstacle).
    pub accel: f32,
    pub length: f32,
    pub width: f32,
    pub is_static: bool,
}

/// Writes the `ego`, `route` and `lane` slices.
pub fn write_ego_route(e: &EgoOnRoute, out: &mut [f32]) {
    let vp = e.vehicle;
    let ego = e.ego;
    let center = ego.center(vp);
    let heading = Vec2::from_angle(ego.yaw);
    let line = e.map.paths[e.path].line;
    let lane = e.map.lanes[e.lane];
    let route_yaw = e.route_dir.y.atan2(e.route_dir.x);
    write_ego(
        out,
        &EgoFeatures {
            speed: ego.v,
            accel: ego.accel,
            steer: ego.steer,
            max_steer: vp.max_steer,
            yaw_rate: ego.yaw_rate,
            route_lat: e.route_lat,
            lane_width: lane.width,
            heading_error: wrap_angle(ego.yaw - route_yaw),
            speed_limit: lane.speed_limit,
            allowed_speed: e.allowed_speed,
        },
    );
    for (k, &d) in ROUTE_SAMPLES.iter().enumerate() {
        let (q, _) = e.map.lines.sample(line, e.route_s + d);
        write_route_point(out, k, q.to_frame(center, heading));
    }
    let (left, right) = e.lanes_beside;
    write_lane_edges(out, e.route_lat, lane.width, [left as f32, right as f32]);
}

/// The ego's own state in the units a world keeps it (m, m/s, m/s^2, rad, rad/s);
/// [`write_ego`] scales it into the layout's `ego` slice. Any world fills it from what it
/// knows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EgoFeatures {
    pub speed: f32,
    pub accel: f32,
    pub steer: f32,
    pub max_steer: f32,
    pub yaw_rate: f32,
    /// Signed offset of the box centre from the route centreline, positive to the left.
    pub route_lat: f32,
    pub lane_width: f32,
    /// Ego yaw minus the route's direction, wrapped to (-pi, pi].
    pub heading_error: f32,
    pub speed_limit: f32,
    /// The allowed speed here: the limit and the bends ahead ([`crate::road::speed_profile`]).
    pub allowed_speed: f32,
}

/// Writes the `ego` slice (`out` is a whole observation).
pub fn write_ego(out: &mut [f32], e: &EgoFeatures) {
    let half_lane = 0.5 * e.lane_width;
    out[0] = e.speed / 10.0;
    out[1] = e.accel / 4.0;
    out[2] = e.steer / e.max_steer;
    out[3] = e.yaw_rate / 0.5;
    out[4] = e.route_lat / half_lane;
    out[5] = e.heading_error / 0.5;
    out[6] = e.speed_limit / 10.0;
    out[7] = e.allowed_speed / 10.0;
}

/// Writes route sample `k` (at [`ROUTE_SAMPLES`]`[k]` metres ahead along the route), given in
/// the ego frame (origin at the box centre, x forward, y left, metres).
pub fn write_route_point(out: &mut [f32], k: usize, p: Vec2) {
    out[8 + 2 * k] = p.x / 50.0;
    out[9 + 2 * k] = p.y / 20.0;
}

/// Writes the `lane` slice: the route lane's edges from the ego's lateral offset and the lane
/// width, the road's edges counting `lanes_beside` = [left, right] same-direction lanes.
pub fn write_lane_edges(out: &mut [f32], route_lat: f32, lane_width: f32, lanes_beside: [f32; 2]) {
    let half_lane = 0.5 * lane_width;
    let to_left = half_lane - route_lat;
    let to_right = half_lane + route_lat;
    out[28] = to_left / lane_width;
    out[29] = to_right / lane_width;
    out[30] = ((to_left + lanes_beside[0] * lane_width) / lane_width).min(4.0);
    out[31] = ((to_right + lanes_beside[1] * lane_width) / lane_width).min(4.0);
}

/// Writes the `agents` slice: the nearest of objects `0..count` within 60 m, nearest first
/// (`object(i)` is `None` for one that is not there). A fixed-size insertion sort: no
/// allocation.
pub fn write_nearest(
    e: &EgoOnRoute,
    count: usize,
    out: &mut [f32],
    object: impl Fn(usize) -> Option<Nearby>,
) {
    let center = e.ego.center(e.vehicle);
    let heading = Vec2::from_angle(e.ego.yaw);
    let line = e.map.paths[e.path].line;
    let half_lane = 0.5 * e.map.lanes[e.lane].width;
    let mut nearest = [(f32::INFINITY, usize::MAX); K_AGENTS];
    for i in 0..count {
        let Some(o) = object(i) else {
            continue;
        };
        let d2 = (o.pos - center).norm_sq();
        if d2 >= nearest[K_AGENTS - 1].0 {
            continue;
        }
        let mut k = K_AGENTS - 1;
        while k > 0 && nearest[k - 1].0 > d2 {
            nearest[k] = nearest[k - 1];
            k -= 1;
        }
        nearest[k] = (d2, i);
    }
    let vel_ego = heading * e.ego.v;
    for (k, &(d2, idx)) in nearest.iter().enumerate() {
        if idx == usize::MAX || d2 > 60.0 * 60.0 {
            break;
        }
        let Some(o) = object(idx) else {
            break;
        };
        let p = o.pos.to_frame(center, heading);
        let rel_v = o.vel - vel_ego;
        let f = &mut out[32 + k * AGENT_FEATURES..32 + (k + 1) * AGENT_FEATURES];
        f[0] = 1.0;
        f[1] = p.x / 50.0;
        f[2] = p.y / 50.0;
        f[3] = o.heading.dot(heading);
        f[4] = heading.cross(o.heading);
        f[5] = rel_v.dot(heading) / 10.0;
        f[6] = heading.cross(rel_v) / 10.0;
        f[7] = o.length / 5.0;
        f[8] = o.width / 2.5;
        f[9] = f32::from(o.is_static);
        // On the route ahead: projects onto the route within the lane.
        let (s, lat, _) = e.map.lines.project(line, o.pos, e.route_s + p.x.max(0.0));
        f[10] = f32::from(s > e.route_s && lat.abs() < half_lane + 0.5 * o.width);
        f[11] = o.accel / 4.0;
    }
}

/// Writes the `light` slice: the next light's state and the distance to its stop line from
/// the ego's front (metres), or none.
pub fn write_next_light(out: &mut [f32], next: Option<(LightState, f32)>) {
    let light_base = 32 + K_AGENTS * AGENT_FEATURES;
    match next {
        None => {
            out[light_base] = 1.0;
            out[light_base + 4] = 1.0;
        }
        Some((state, distance)) => {
            let k = match state {
                LightState::Green => 1,
                LightState::Yellow => 2,
                LightState::Red => 3,
            };
            out[light_base + k] = 1.0;
            out[light_base + 4] = distance / 50.0;
        }
    }
}

/// Writes the `leader` slice: the gap to the nearest obstacle ahead on the route (metres) and
/// its speed minus the ego's (m/s), or none.
pub fn write_leader(out: &mut [f32], leader: Option<(f32, f32)>) {
    let lb = 37 + K_AGENTS * AGENT_FEATURES;
    match leader {
        Some((gap, relative_speed)) => {
            out[lb] = (gap / 50.0).clamp(-0.2, 1.6);
            out[lb + 1] = relative_speed / 10.0;
            out[lb + 2] = 1.0;
        }
        None => out[lb] = 1.6,
    }
}

/// Where the route's lane merges into a lane with traffic, as the `merge` slice reads it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MergeView {
    /// From the ego's front to the merge point along the route, metres (negative just past it).
    pub distance: f32,
    /// The merging lane's nearest vehicle ahead of the ego once mapped onto the route: its
    /// bumper gap (metres, negative when they overlap) and its speed minus the ego's (m/s).
    pub ahead: Option<(f32, f32)>,
    /// The same for the nearest vehicle behind.
    pub behind: Option<(f32, f32)>,
}

/// Writes the `merge` slice, or none.
pub fn write_merge(out: &mut [f32], merge: Option<&MergeView>) {
    let gap = |out: &mut [f32], at: usize, car: Option<(f32, f32)>| match car {
        Some((gap, relative_speed)) => {
            out[at] = (gap / 50.0).clamp(-0.2, 1.6);
            out[at + 1] = relative_speed / 10.0;
        }
        None => out[at] = 1.6,
    };
    match merge {
        Some(m) => {
            out[MERGE_BASE] = (m.distance / 100.0).clamp(-0.2, 1.6);
            out[MERGE_BASE + 1] = 1.0;
            gap(out, MERGE_BASE + 2, m.ahead);
            gap(out, MERGE_BASE + 4, m.behind);
        }
        None => {
            out[MERGE_BASE] = 1.6;
            gap(out, MERGE_BASE + 2, None);
            gap(out, MERGE_BASE + 4, None);
        }
    }
}
