//! The privileged expert: knows the route, the lights, every agent and its intentions, and
//! plans H waypoints executed through the same controller as every other planner.
//!
//! Longitudinal: IDM towards the route's allowed speed (limit and curvature), behind the
//! nearest obstacle ahead (vehicles, cut-ins by their intended lane, scripted hard brakes by
//! their intended deceleration, stop lines, merging traffic projected onto the route), with a
//! kinematic braking floor. Lateral: the route centreline, converging from the current offset.
//! The plan is a constant-acceleration profile, which the controller's fit recovers exactly.
//!
//! Comfort: the plan brakes no harder than `max_comfort_decel` unless the kinematic floor
//! demands more (an emergency: safety over comfort), and the controller's jerk limit
//! ([`crate::vehicle::limit_jerk`]) ramps the command, so the ride stays inside nuPlan's
//! comfort bounds. The plan is what the scene asks for, not a function of the ego's own
//! acceleration, so a planner cloned from it has no acceleration to copy. Stops fade out
//! (deceleration proportional to speed), so coming to a halt is not a jerk either.

use crate::geom::Vec2;
use crate::scenario::MergeLink;
use crate::traffic::agent_yields_at_merge;
use crate::world::{Leader, LeaderQuery, Observer, StopLines, World};

/// Longitudinal acceleration the expert wants now.
pub fn expert_accel(w: &World) -> f32 {
    let e = &w.cfg.expert;
    let vp = &w.cfg.vehicle;
    let v = w.ego.v;
    let s = w.route_s;
    let horizon = (v * 4.0 + 25.0).min(100.0);
    // The route centreline ahead (the plan converges to it), seeing cut-ins by intention.
    let mut lead = w.leader_on_path(&LeaderQuery {
        d: 0.0,
        observer: Observer::PrivilegedEgo,
        stop_lines: StopLines::Obey {
            yellow_decel: e.yellow_brake,
        },
        // A car overlapping the ego's length is beside it (crossing or turning traffic in an
        // intersection): braking does not help, and it must not hide the car ahead.
        min_gap: -1.0,
        ..w.ego_leader_query(horizon)
    });
    // The kinematic floor: what the gap ahead demands. A car on the main road that goes first
    // demands a gap at the merge point, not now: the ego has until then to fall in behind it.
    let mut b_req = floor_decel(v, &lead);
    if let Some(m) = w.merge {
        if s < m.s_route_merge + MergeLink::PAST {
            let to_merge = m.s_route_merge - s;
            for a in w
                .agents
                .iter()
                .filter(|a| a.active && a.path == m.main_path)
            {
                let rel = m.ego_ahead_by(s, a.s);
                let half = 0.5 * (a.length + vp.length);
                if agent_yields_at_merge(a, rel, half) {
                    continue;
                }
                // Gap acceptance: go first if, at the merge point, the ego will be ahead of the
                // agent by a safe margin (half a second of the agent's travel plus 2 m).
                let t_merge = to_merge.max(0.0) / v.max(1.0);
                let rel_at_merge = rel + (v - a.v) * t_merge;
                if rel > -half && rel_at_merge > half + 2.0 + 0.5 * a.v {
                    continue;
                }
                // Committed: too close to the merge point to fall behind safely.
                if rel > half + 1.0 && to_merge < 20.0 {
                    continue;
                }
                if !(-80.0..=60.0).contains(&rel) || to_merge > MERGE_FLOOR_DISTANCE {
                    continue;
                }
                // The agent goes first. Ahead: a virtual leader, followed from the start of the
                // merge zone so the ego slots in behind it smoothly. Behind: wait before the
                // merge point until it has passed.
                let gap = if rel < 0.0 {
                    -rel - half
                } else {
                    to_merge - 6.0
                };
                let (v_lead, accel) = if rel < 0.0 {
                    (a.v, a.accel)
                } else {
                    (0.0, 0.0)
                };
                let virtual_leader = Leader {
                    gap,
                    v: v_lead,
                    accel,
                };
                if gap < lead.gap && to_merge <= MERGE_FOLLOW_DISTANCE {
                    lead = virtual_leader;
                }
                b_req = b_req.max(if rel < 0.0 {
                    // Fall in behind it by the merge point: the constant deceleration that
                    // opens the gap to 1 m in the time the ego needs to get there.
                    let to_conflict = (to_merge - MERGE_CONFLICT_BEFORE).max(0.0);
                    let t = (to_conflict / v.max(1.0)).max(0.1);
                    let deficit = 1.0 + (v - a.v) * t - gap;
                    (2.0 * deficit / (t * t)).max(0.0)
                } else {
                    floor_decel(v, &virtual_leader)
                });
            }
        }
    }
    let v_des = w.allowed_speed(s + 0.5 * v).min(w.allowed_speed(s));
    let idm = e.idm(v_des.max(0.5));
    let mut target = idm.accel(v, lead.gap, lead.v, vp.max_brake);
    if b_req > FLOOR_ONSET {
        target = target.min(-b_req * FLOOR_MARGIN);
    }
    let target = target.max(-e.max_comfort_decel);
    let target = if target < 0.0 {
        // Fade the stop out: deceleration proportional to speed, so standing still is reached
        // without a step in acceleration.
        target.max(-v / STOP_FADE_SECONDS)
    } else {
        target
    };
    let mut a = target;
    if b_req > e.max_comfort_decel {
        // Emergency: the gap demands more than comfort allows.
        a = a.min(-b_req);
    }
    a.clamp(-vp.max_brake, e.max_accel)
}

/// Distance to the merge point from which the ego follows a main-road car that goes first
/// as if it were in its lane, metres.
const MERGE_FOLLOW_DISTANCE: f32 = 80.0;

/// Distance to the merge point from which such a car's gap demands braking (the kinematic
/// floor), metres: farther out than the following, so the demand grows from nothing instead
/// of appearing at full strength when the following starts.
const MERGE_FLOOR_DISTANCE: f32 = 160.0;

/// How far before the merge point the ego's path comes beside main-road traffic, metres:
/// the on-ramp's taper (60 m long) closes the gap between the lanes' vehicles about 35 m
/// before its end.
const MERGE_CONFLICT_BEFORE: f32 = 40.0;

/// The kinematic floor applies from this deceleration on, m/s^2; below it IDM's own braking
/// suffices.
const FLOOR_ONSET: f32 = 1.5;

/// The kinematic floor with the jerk limit's lag folded in: the ramp-limited command falls
/// behind the constant deceleration it aims at, so it aims a little beyond.
const FLOOR_MARGIN: f32 = 1.2;

/// Time constant of the last metres of a stop, seconds.
const STOP_FADE_SECONDS: f32 = 0.8;

/// The constant deceleration (m/s^2, >= 0) that keeps the ego behind `lead` with a 1 m margin:
/// matching its speed within the gap if it keeps its speed, and stopping behind the point
/// where it stops if it brakes. IDM alone brakes too late for a hard-braking leader.
fn floor_decel(v: f32, lead: &Leader) -> f32 {
    if !lead.gap.is_finite() {
        return 0.0;
    }
    let room = (lead.gap - 1.0).max(0.2);
    let closing = if v > lead.v {
        (v - lead.v) * (v - lead.v) / (2.0 * room)
    } else {
        0.0
    };
    let stopping = if lead.accel < -0.5 {
        let lead_stop = lead.v * lead.v / (2.0 * -lead.accel);
        v * v / (2.0 * (room + lead_stop))
    } else {
        0.0
    };
    closing.max(stopping)
}

/// Writes the expert's H waypoints (ego frame, flattened x0,y0,...) into `out`.
pub fn expert_plan(w: &World, out: &mut [f32]) {
    let a = expert_accel(w);
    let vp = &w.cfg.vehicle;
    let cp = &w.cfg.controller;
    let line = w.map.paths[w.route].line;
    let v = w.ego.v;
    let center = w.ego.center(vp);
    let heading = Vec2::from_angle(w.ego.yaw);
    let tau = w.cfg.expert.lateral_tau;
    for (j, wp) in out.chunks_exact_mut(2).enumerate() {
        let t = (j + 1) as f32 * cp.waypoint_dt;
        let ds = if v + a * t >= 0.0 {
            v * t + 0.5 * a * t * t
        } else {
            v * v / (2.0 * -a)
        };
        let (q, tan) = w.map.lines.sample(line, w.route_s + ds);
        // Converge over distance, not time: a stopped plan must not move sideways.
        let lat = w.route_lat * (-ds / (tau * v.max(5.0))).exp();
        let p = (q + tan.perp() * lat).to_frame(center, heading);
        wp[0] = p.x;
        wp[1] = p.y;
    }
}
