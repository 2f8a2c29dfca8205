//! deltaplan's vector observation from what the egodriver contract carries: the ego's
//! motion and the route ahead, both in the rig frame. Written with the layout's own pieces
//! (`deltaplan_sim::obs::{write_ego, write_route_point, write_lane_edges, write_next_light,
//! write_leader, write_merge}`) and the allowed-speed profile of the built-in world
//! (`deltaplan_sim::road::speed_profile`), so the layout is defined once.
//!
//! What the contract does not carry, and how it is filled:
//! - other vehicles and obstacles: none (the `agents` slice is zeros, "absent"; the camera
//!   frames show them, but this planner reads no images);
//! - traffic lights: none ahead; the leader: none; no merge;
//! - the lane: its width and speed limit are [`Assumptions`]; no lanes beside it, so the road's
//!   edges are the lane's;
//! - the steering angle: from the yaw rate through the bicycle model,
//!   `atan(wheelbase * yaw_rate / speed)` (0 below 1 m/s);
//! - no route (none submitted, or fewer than two distinct points): straight ahead.

use deltaplan_sim::geom::{wrap_angle, Vec2};
use deltaplan_sim::obs::{
    write_ego, write_lane_edges, write_leader, write_merge, write_next_light, write_route_point,
    EgoFeatures, OBS_DIM, ROUTE_SAMPLES,
};
use deltaplan_sim::road::{speed_profile, Polylines};
use deltaplan_sim::SimConfig;

/// What deltaplan's observation needs and the contract does not say: assumed for every session.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Assumptions {
    /// Width of the ego's lane, metres (the built-in world's lanes are 3.5 m).
    pub lane_width: f32,
    /// Speed limit of the road, m/s.
    pub speed_limit: f32,
}

impl Default for Assumptions {
    fn default() -> Self {
        Assumptions {
            lane_width: 3.5,
            speed_limit: 13.9,
        }
    }
}

/// The ego's motion at its latest pose: forward speed (m/s, never negative, as deltaplan's
/// vehicle), acceleration along its heading (m/s^2) and yaw rate (rad/s, counter-clockwise).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct EgoMotion {
    pub speed: f32,
    pub accel: f32,
    pub yaw_rate: f32,
}

/// Where the observation's route came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteSource {
    /// The route the runtime submitted.
    Submitted,
    /// None usable was submitted: straight ahead.
    StraightAhead,
}

/// Below this speed the steering angle is not estimated (0): the yaw rate says little.
const STEER_MIN_SPEED: f32 = 1.0;

/// Length of the straight route assumed when none is usable, metres.
const STRAIGHT_ROUTE_M: f32 = 200.0;

/// How much of a submitted route is used, metres: far beyond the 50 m the observation samples
/// and the braking distance the allowed speed looks ahead.
pub const MAX_ROUTE_M: f32 = 1000.0;

/// Waypoints farther from the ego than this are ignored, metres.
pub const MAX_ROUTE_RANGE_M: f32 = 2000.0;

/// Writes the observation (`out`, [`OBS_DIM`] floats) of an ego at the rig origin, heading
/// along x, moving as `motion`, with `route` the route's centreline in the rig frame (seen
/// from above, metres, in driving order).
pub fn observe(
    motion: &EgoMotion,
    route: &[Vec2],
    sim: &SimConfig,
    assumptions: &Assumptions,
    out: &mut [f32],
) -> RouteSource {
    assert_eq!(out.len(), OBS_DIM, "one observation");
    out.fill(0.0);
    let vp = &sim.vehicle;
    let center = Vec2::new(vp.rear_to_center, 0.0);
    let heading = Vec2::new(1.0, 0.0);

    let mut lines = Polylines::default();
    let (line, source) = match distinct(route) {
        Some(points) => (lines.push_resampled(&points), RouteSource::Submitted),
        None => (
            lines.push_resampled(&[Vec2::ZERO, Vec2::new(STRAIGHT_ROUTE_M, 0.0)]),
            RouteSource::StraightAhead,
        ),
    };
    let (s0, _) = lines.project_global(line, center);
    let (s, route_lat, tangent) = lines.project(line, center, s0);

    let mut allowed = Vec::new();
    speed_profile(
        lines.points(line),
        |_| assumptions.speed_limit,
        sim.expert.lateral_accel,
        sim.expert.comfort_brake,
        &mut allowed,
    );
    let at = ((s / deltaplan_sim::road::SPACING) as usize).min(allowed.len() - 1);

    let steer = if motion.speed >= STEER_MIN_SPEED {
        (vp.wheelbase * motion.yaw_rate / motion.speed)
            .atan()
            .clamp(-vp.max_steer, vp.max_steer)
    } else {
        0.0
    };
    write_ego(
        out,
        &EgoFeatures {
            speed: motion.speed,
            accel: motion.accel,
            steer,
            max_steer: vp.max_steer,
            yaw_rate: motion.yaw_rate,
            route_lat,
            lane_width: assumptions.lane_width,
            heading_error: wrap_angle(-tangent.y.atan2(tangent.x)),
            speed_limit: assumptions.speed_limit,
            allowed_speed: allowed[at],
        },
    );
    for (k, &d) in ROUTE_SAMPLES.iter().enumerate() {
        let (q, _) = lines.sample(line, s + d);
        write_route_point(out, k, q.to_frame(center, heading));
    }
    write_lane_edges(out, route_lat, assumptions.lane_width, [0.0, 0.0]);
    write_next_light(out, None);
    write_leader(out, None);
    write_merge(out, None);
    source
}

/// `route` without waypoints beyond [`MAX_ROUTE_RANGE_M`] of the ego and repeated points
/// (closer than 1 cm), cut after [`MAX_ROUTE_M`], if at least two points remain and they span
/// a metre: what the polyline resampler needs. The range keeps f32 geometry exact to a
/// fraction of a millimetre and the cut bounds the resampled line (a point every `SPACING`),
/// whatever a runtime sends: fuzzing found a waypoint 9e17 m away that collapsed the line to
/// one point (a panic), and one 1e30 m away that exhausted memory.
fn distinct(route: &[Vec2]) -> Option<Vec<Vec2>> {
    let mut points: Vec<Vec2> = Vec::with_capacity(route.len());
    let mut length = 0.0f32;
    for &p in route.iter().filter(|p| p.norm() <= MAX_ROUTE_RANGE_M) {
        let Some(&q) = points.last() else {
            points.push(p);
            continue;
        };
        let step = (p - q).norm();
        if step < 0.01 {
            continue;
        }
        if length + step >= MAX_ROUTE_M {
            points.push(q + (p - q) * ((MAX_ROUTE_M - length) / step));
            length = MAX_ROUTE_M;
            break;
        }
        points.push(p);
        length += step;
    }
    (points.len() >= 2 && length >= 1.0).then_some(points)
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltaplan_sim::obs::slice;

    fn close(a: f32, b: f32) -> bool {
        (a - b).abs() < 1e-5
    }

    fn straight_route(y: f32) -> Vec<Vec2> {
        (0..50).map(|i| Vec2::new(2.0 * i as f32, y)).collect()
    }

    #[test]
    fn far_waypoints_are_ignored_and_a_route_is_cut_after_a_kilometre() {
        // A waypoint 9e17 m away (ignored), then 300 m east and 1,500 m north: the route runs
        // from (16, 0) and is cut 1,000 m along, 716 m up the northward leg.
        let route = [
            Vec2::new(16.0, 9.2e17),
            Vec2::new(16.0, 0.0),
            Vec2::new(300.0, 0.0),
            Vec2::new(300.0, 1500.0),
        ];
        let cut = distinct(&route).unwrap();
        assert_eq!(cut.len(), 3, "{cut:?}");
        assert!(close(cut[0].y, 0.0) && close(cut[2].x, 300.0), "{cut:?}");
        assert!((cut[2].y - 716.0).abs() < 1e-3, "{cut:?}");
        // A short route keeps every distinct point; nothing usable gives None.
        let short = [
            Vec2::ZERO,
            Vec2::ZERO,
            Vec2::new(5.0, 0.0),
            Vec2::new(9.0, 1.0),
        ];
        assert_eq!(distinct(&short).unwrap().len(), 3);
        assert_eq!(distinct(&[Vec2::new(1e30, 0.0), Vec2::ZERO]), None);
        let mut out = vec![0.0; OBS_DIM];
        let source = observe(
            &EgoMotion::default(),
            &route,
            &SimConfig::default(),
            &Assumptions::default(),
            &mut out,
        );
        assert_eq!(source, RouteSource::Submitted);
        assert!(out.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn a_straight_route_one_metre_to_the_right_gives_the_hand_computed_features() {
        let sim = SimConfig::default();
        let assumptions = Assumptions::default();
        let motion = EgoMotion {
            speed: 5.0,
            accel: 1.0,
            yaw_rate: 0.1,
        };
        let mut out = vec![f32::NAN; OBS_DIM];
        // The route runs 1 m to the ego's right: the ego is 1 m left of it.
        let source = observe(&motion, &straight_route(-1.0), &sim, &assumptions, &mut out);
        assert_eq!(source, RouteSource::Submitted);
        assert!(close(out[0], 0.5) && close(out[1], 0.25) && close(out[3], 0.2));
        // Steering from the bicycle model: atan(2.8 * 0.1 / 5) / 0.6.
        assert!(
            close(out[2], (2.8f32 * 0.1 / 5.0).atan() / 0.6),
            "{}",
            out[2]
        );
        assert!(close(out[4], 1.0 / 1.75), "lateral offset {}", out[4]);
        assert!(close(out[5], 0.0), "heading error {}", out[5]);
        assert!(
            close(out[6], 1.39) && close(out[7], 1.39),
            "{} {}",
            out[6],
            out[7]
        );
        // Route samples from the box centre (1.4 m ahead of the rig origin): (d, -1).
        for (k, &d) in ROUTE_SAMPLES.iter().enumerate() {
            assert!(
                close(out[8 + 2 * k], d / 50.0),
                "sample {k}: {}",
                out[8 + 2 * k]
            );
            assert!(
                close(out[9 + 2 * k], -1.0 / 20.0),
                "sample {k}: {}",
                out[9 + 2 * k]
            );
        }
        // 0.75 m to the lane's left edge, 2.75 m to its right edge (lane 3.5 m).
        assert!(close(out[28], 0.75 / 3.5) && close(out[29], 2.75 / 3.5));
        assert!(close(out[30], 0.75 / 3.5) && close(out[31], 2.75 / 3.5));
        let (agents, n) = slice("agents").unwrap();
        assert!(out[agents..agents + n].iter().all(|&v| v == 0.0));
        let (light, _) = slice("light").unwrap();
        assert_eq!(&out[light..light + 5], &[1.0, 0.0, 0.0, 0.0, 1.0]);
        let (leader, _) = slice("leader").unwrap();
        assert_eq!(&out[leader..leader + 3], &[1.6, 0.0, 0.0]);
        let (merge, _) = slice("merge").unwrap();
        assert_eq!(&out[merge..merge + 6], &[1.6, 0.0, 1.6, 0.0, 1.6, 0.0]);
    }

    #[test]
    fn a_route_turned_left_gives_a_negative_heading_error_and_a_bend_lowers_the_allowed_speed() {
        let sim = SimConfig::default();
        let assumptions = Assumptions::default();
        // The route heads 0.2 rad to the left of the ego, through the box centre.
        let (s, c) = 0.2f32.sin_cos();
        let route: Vec<Vec2> = (-5..50)
            .map(|i| Vec2::new(1.4 + c * i as f32, s * i as f32))
            .collect();
        let mut out = vec![0.0; OBS_DIM];
        observe(&EgoMotion::default(), &route, &sim, &assumptions, &mut out);
        assert!(close(out[5], -0.2 / 0.5), "heading error {}", out[5]);
        assert!(close(out[4], 0.0), "lateral offset {}", out[4]);
        // The sample 10 m ahead along the route: (10 cos 0.2, 10 sin 0.2) from the centre.
        assert!(close(out[8 + 6], 10.0 * c / 50.0) && close(out[9 + 6], 10.0 * s / 20.0));
        assert!(close(out[2], 0.0), "no steering estimate when standing");

        // A circle of radius 20 m: sqrt(lateral_accel * 20) m/s allowed, below the limit.
        let radius = 20.0f32;
        let arc: Vec<Vec2> = (0..60)
            .map(|i| {
                let a = i as f32 * 0.05;
                Vec2::new(1.4 + radius * a.sin(), radius * (1.0 - a.cos()))
            })
            .collect();
        observe(&EgoMotion::default(), &arc, &sim, &assumptions, &mut out);
        let want = (sim.expert.lateral_accel * radius).sqrt();
        assert!(want < assumptions.speed_limit);
        assert!(
            (out[7] * 10.0 - want).abs() < 0.05 * want,
            "{} vs {want}",
            out[7] * 10.0
        );
    }

    #[test]
    fn without_a_usable_route_the_route_is_straight_ahead() {
        let sim = SimConfig::default();
        let mut out = vec![0.0; OBS_DIM];
        for route in [vec![], vec![Vec2::new(3.0, 1.0)], vec![Vec2::ZERO; 5]] {
            let source = observe(
                &EgoMotion::default(),
                &route,
                &sim,
                &Assumptions::default(),
                &mut out,
            );
            assert_eq!(source, RouteSource::StraightAhead);
            for (k, &d) in ROUTE_SAMPLES.iter().enumerate() {
                assert!(close(out[8 + 2 * k], d / 50.0) && out[9 + 2 * k] == 0.0);
            }
            assert!(close(out[4], 0.0) && close(out[5], 0.0));
        }
    }
}
