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
    out[0] = ego.v / 10.0;
    out[1] = ego.accel / 4.0;
    out[2] = ego.steer / vp.max_steer;
    out[3] = ego.yaw_rate / 0.5;
    out[4] = w.route_lat / half_lane;
    out[5] = wrap_angle(ego.yaw - route_yaw) / 0.5;
    out[6] = lane.speed_limit / 10.0;
    out[7] = w.allowed_speed(w.route_s) / 10.0;

    // Route samples.
    for (k, &d) in ROUTE_SAMPLES.iter().enumerate() {
        let (q, _) = w.map.lines.sample(line, w.route_s + d);
        let p = q.to_frame(center, heading);
        out[8 + 2 * k] = p.x / 50.0;
        out[9 + 2 * k] = p.y / 20.0;
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
    let to_left = half_lane - w.route_lat;
    let to_right = half_lane + w.route_lat;
    out[28] = to_left / lane.width;
    out[29] = to_right / lane.width;
    out[30] = ((to_left + count(|l| l.left) * lane.width) / lane.width).min(4.0);
    out[31] = ((to_right + count(|l| l.right) * lane.width) / lane.width).min(4.0);

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
    let light_base = 32 + K_AGENTS * AGENT_FEATURES;
    let front = w.route_s + 0.5 * vp.length;
    let next = w
        .map
        .path_stops(w.route)
        .iter()
        .find(|st| st.s >= front - 0.5 && st.s - front < 80.0);
    match next {
        None => {
            out[light_base] = 1.0;
            out[light_base + 4] = 1.0;
        }
        Some(st) => {
            let k = match w.lights[st.light as usize].state(w.time()) {
                LightState::Green => 1,
                LightState::Yellow => 2,
                LightState::Red => 3,
            };
            out[light_base + k] = 1.0;
            out[light_base + 4] = (st.s - front) / 50.0;
        }
    }

    // Leader.
    let lead = w.leader_on_path(&LeaderQuery {
        stop_lines: StopLines::Obey {
            yellow_decel: w.cfg.expert.yellow_brake,
        },
        ..w.ego_leader_query(80.0)
    });
    let lb = light_base + 5;
    if lead.gap.is_finite() {
        out[lb] = (lead.gap / 50.0).clamp(-0.2, 1.6);
        out[lb + 1] = (lead.v - ego.v) / 10.0;
        out[lb + 2] = 1.0;
    } else {
        out[lb] = 1.6;
    }
}
