//! The observation: one fixed-size f32 vector per ego, in the ego frame (x forward, y left),
//! every value scaled to roughly [-1, 1] (a few can exceed it, never by orders of magnitude).
//!
//! | name | len | content |
//! |---|---|---|
//! | `ego` | 8 | speed/10, accel/4, steer/max_steer, yaw_rate/0.5, lateral offset from route / half lane width, heading error vs route / 0.5, lane speed limit/10, allowed speed (limit and bends ahead)/10 |
//! | `route` | 20 | route centreline points at 2,4,7,10,14,19,25,32,40,50 m ahead: (x/50, y/20) each |
//! | `lane` | 4 | distance to left and right edge of the route lane / lane width; to the left and right edge of the road (same-direction lanes) / lane width, clamped to 4 |
//! | `agents` | 8 x 11 | the 8 nearest vehicles and obstacles within 60 m, nearest first: present, x/50, y/50, cos and sin of relative heading, relative vx/10, vy/10 (ego frame), length/5, width/2.5, static flag, on-route-ahead flag; zeros when absent |
//! | `light` | 5 | next light on the route within 80 m: one-hot none/green/yellow/red, distance to its stop line/50 (1 when none) |
//! | `leader` | 3 | nearest obstacle ahead on the route (vehicle, obstacle, or stop line demanding a stop) within 80 m: gap/50 (clamped to 1.6, 1.6 when none), (leader speed - ego speed)/10, present |

use crate::geom::{wrap_angle, Vec2};
use crate::road::{Lane, LaneId};
use crate::traffic::LightState;
use crate::world::{LeaderQuery, StopLines, World};

pub const K_AGENTS: usize = 8;
pub const AGENT_FEATURES: usize = 11;
pub const ROUTE_SAMPLES: [f32; 10] = [2.0, 4.0, 7.0, 10.0, 14.0, 19.0, 25.0, 32.0, 40.0, 50.0];

/// Named slices of the observation vector: (name, start, len).
pub const LAYOUT: [(&str, usize, usize); 6] = [
    ("ego", 0, 8),
    ("route", 8, 20),
    ("lane", 28, 4),
    ("agents", 32, K_AGENTS * AGENT_FEATURES),
    ("light", 32 + K_AGENTS * AGENT_FEATURES, 5),
    ("leader", 37 + K_AGENTS * AGENT_FEATURES, 3),
];

/// Length of the observation vector.
pub const OBS_DIM: usize = 40 + K_AGENTS * AGENT_FEATURES;

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
    let vp = &w.cfg.vehicle;
    let ego = &w.ego;
    let center = ego.center(vp);
    let heading = Vec2::from_angle(ego.yaw);
    let line = w.map.paths[w.route].line;
    let lane_id = w.map.lane_at(w.route, w.route_s);
    let lane = w.map.lanes[lane_id as usize];
    let half_lane = 0.5 * lane.width;

    // Ego.
    let route_yaw = w.route_dir.y.atan2(w.route_dir.x);
    write_ego(
        out,
        &EgoFeatures {
            speed: ego.v,
            accel: ego.accel,
            steer: ego.steer,
            max_steer: vp.max_steer,
            yaw_rate: ego.yaw_rate,
            route_lat: w.route_lat,
            lane_width: lane.width,
            heading_error: wrap_angle(ego.yaw - route_yaw),
            speed_limit: lane.speed_limit,
            allowed_speed: w.allowed_speed(w.route_s),
        },
    );

    // Route samples.
    for (k, &d) in ROUTE_SAMPLES.iter().enumerate() {
        let (q, _) = w.map.lines.sample(line, w.route_s + d);
        write_route_point(out, k, q.to_frame(center, heading));
    }

    // Lane and road edges.
    // Same-direction lanes beside the route lane, walking `next` (left or right), at most 5.
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
        n as f32
    };
    write_lane_edges(
        out,
        w.route_lat,
        lane.width,
        [count(|l| l.left), count(|l| l.right)],
    );

    // Nearest agents and obstacles: fixed-size insertion sort, no allocation.
    let mut nearest = [(f32::INFINITY, usize::MAX); K_AGENTS];
    let n_agents = w.agents.len();
    let mut insert = |d2: f32, idx: usize| {
        if d2 >= nearest[K_AGENTS - 1].0 {
            return;
        }
        let mut k = K_AGENTS - 1;
        while k > 0 && nearest[k - 1].0 > d2 {
            nearest[k] = nearest[k - 1];
            k -= 1;
        }
        nearest[k] = (d2, idx);
    };
    for (i, a) in w.agents.iter().enumerate() {
        if a.active {
            insert((a.pos - center).norm_sq(), i);
        }
    }
    for (i, b) in w.statics.iter().enumerate() {
        insert((b.center - center).norm_sq(), n_agents + i);
    }
    let vel_ego = heading * ego.v;
    for (k, &(d2, idx)) in nearest.iter().enumerate() {
        if idx == usize::MAX || d2 > 60.0 * 60.0 {
            break;
        }
        let (pos, h, vel, len, wid, is_static) = if idx < n_agents {
            let a = &w.agents[idx];
            (a.pos, a.heading, a.heading * a.v, a.length, a.width, 1.0)
        } else {
            let b = &w.statics[idx - n_agents];
            (
                b.center,
                b.heading,
                Vec2::ZERO,
                2.0 * b.half_length,
                2.0 * b.half_width,
                1.0,
            )
        };
        let is_static = if idx < n_agents { 0.0 } else { is_static };
        let p = pos.to_frame(center, heading);
        let rel_v = vel - vel_ego;
        let f = &mut out[32 + k * AGENT_FEATURES..32 + (k + 1) * AGENT_FEATURES];
        f[0] = 1.0;
        f[1] = p.x / 50.0;
        f[2] = p.y / 50.0;
        f[3] = h.dot(heading);
        f[4] = heading.cross(h);
        f[5] = rel_v.dot(heading) / 10.0;
        f[6] = heading.cross(rel_v) / 10.0;
        f[7] = len / 5.0;
        f[8] = wid / 2.5;
        f[9] = is_static;
        // On the route ahead: projects onto the route within the lane.
        let (s, lat, _) = w.map.lines.project(line, pos, w.route_s + p.x.max(0.0));
        f[10] = f32::from(s > w.route_s && lat.abs() < half_lane + 0.5 * wid);
    }

    // Next light on the route.
    let front = w.route_s + 0.5 * vp.length;
    let next = w
        .map
        .path_stops(w.route)
        .iter()
        .find(|st| st.s >= front - 0.5 && st.s - front < 80.0);
    write_next_light(
        out,
        next.map(|st| (w.lights[st.light as usize].state(w.time()), st.s - front)),
    );

    // Leader.
    let lead = w.leader_on_path(&LeaderQuery {
        stop_lines: StopLines::Obey {
            yellow_decel: w.cfg.expert.yellow_brake,
        },
        ..w.ego_leader_query(80.0)
    });
    write_leader(
        out,
        lead.gap.is_finite().then_some((lead.gap, lead.v - ego.v)),
    );
}

/// The ego's own state in the units a world keeps it (m, m/s, m/s^2, rad, rad/s);
/// [`write_ego`] scales it into the layout's `ego` slice. Any world fills it from what it
/// knows (the built-in one from its state, a served runtime from the contract's messages).
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
