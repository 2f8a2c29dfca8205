//! Ego vehicle: the kinematic bicycle model and the waypoint-tracking controller that every
//! planner (expert, SFT, refined) is executed through.

use crate::config::{ControllerParams, VehicleParams};
use crate::geom::{OrientedBox, Vec2};
use serde::{Deserialize, Serialize};

/// Ego state at the rear axle.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BicycleState {
    pub pos: Vec2,
    pub yaw: f32,
    /// Forward speed, never negative (no reversing).
    pub v: f32,
    pub steer: f32,
    /// Acceleration realised over the last step.
    pub accel: f32,
    /// Yaw rate realised over the last step.
    pub yaw_rate: f32,
}

impl BicycleState {
    pub fn center(&self, p: &VehicleParams) -> Vec2 {
        self.pos + Vec2::from_angle(self.yaw) * p.rear_to_center
    }
    pub fn bbox(&self, p: &VehicleParams) -> OrientedBox {
        OrientedBox::new(self.center(p), self.yaw, p.length, p.width)
    }

    /// Whether every component is a finite number.
    pub fn is_finite(&self) -> bool {
        [
            self.pos.x,
            self.pos.y,
            self.yaw,
            self.v,
            self.steer,
            self.accel,
            self.yaw_rate,
        ]
        .iter()
        .fold(true, |finite, x| finite & x.is_finite())
    }
}

/// Advances the kinematic bicycle model by `dt` with steering command `steer_cmd` (rate- and
/// angle-limited) and acceleration `accel_cmd` (clamped).
///
/// Within a step, steering and acceleration are constant, so the rear axle travels along a
/// circular arc of curvature tan(steer)/wheelbase; the arc length is integrated exactly
/// (including stopping mid-step), so the model has closed-form solutions the tests check.
pub fn bicycle_step(
    s: &mut BicycleState,
    p: &VehicleParams,
    steer_cmd: f32,
    accel_cmd: f32,
    dt: f32,
) {
    let max_dsteer = p.max_steer_rate * dt;
    let steer = (s.steer + (steer_cmd - s.steer).clamp(-max_dsteer, max_dsteer))
        .clamp(-p.max_steer, p.max_steer);
    let a = accel_cmd.clamp(-p.max_brake, p.max_accel);
    let v0 = s.v;
    let v1 = v0 + a * dt;
    let (dist, v_end) = if v1 >= 0.0 {
        (v0 * dt + 0.5 * a * dt * dt, v1)
    } else {
        // Stops within the step.
        (v0 * v0 / (2.0 * -a), 0.0)
    };
    let k = steer.tan() / p.wheelbase;
    let dyaw = k * dist;
    let (sy0, cy0) = s.yaw.sin_cos();
    let (sy1, cy1) = (s.yaw + dyaw).sin_cos();
    if dyaw.abs() > 1e-4 {
        s.pos.x += (sy1 - sy0) / k;
        s.pos.y += (cy0 - cy1) / k;
    } else {
        // Chord of a nearly straight arc: midpoint heading.
        let (sm, cm) = (s.yaw + 0.5 * dyaw).sin_cos();
        s.pos.x += cm * dist;
        s.pos.y += sm * dist;
    }
    s.yaw = crate::geom::wrap_angle(s.yaw + dyaw);
    s.steer = steer;
    s.accel = (v_end - v0) / dt;
    s.yaw_rate = dyaw / dt;
    s.v = v_end;
}

/// The acceleration command after the jerk limit: at most `cp.max_jerk * dt` away from the
/// acceleration realised over the last step (`accel_now`), so every planner's ride stays
/// within nuPlan's jerk bounds, and a planner's label need not carry the vehicle's own
/// acceleration (a behaviour-cloned planner would learn to copy it). Emergencies pass
/// unchanged: a command braking harder than `cp.emergency_decel`, or any command while the
/// vehicle still brakes that hard.
pub fn limit_jerk(accel: f32, accel_now: f32, cp: &ControllerParams, dt: f32) -> f32 {
    let emergency = accel < -cp.emergency_decel || accel_now < -cp.emergency_decel;
    if cp.max_jerk <= 0.0 || emergency {
        return accel;
    }
    let step = cp.max_jerk * dt;
    accel.clamp(accel_now - step, accel_now + step)
}

/// Turns H waypoints in the ego frame (origin at the box centre, x forward, y left, metres)
/// into (steering, acceleration) commands.
///
/// Longitudinal: least-squares fit of s(t) = v t + a t^2 / 2 to the along-path distances of the
/// first `fit_waypoints` waypoints (a constant-acceleration plan is tracked exactly; noise in a
/// learned plan is averaged). Lateral: pure pursuit from the rear axle towards the point at the
/// look-ahead arc length along the waypoint polyline, or towards its end when it is shorter.
pub fn track_waypoints(
    waypoints: &[[f32; 2]],
    v: f32,
    vp: &VehicleParams,
    cp: &ControllerParams,
) -> (f32, f32) {
    // Along-path distances.
    let mut num = 0.0f32;
    let mut den = 0.0f32;
    let mut s = 0.0f32;
    let mut prev = Vec2::ZERO;
    let m = cp.fit_waypoints.min(waypoints.len());
    for (j, w) in waypoints.iter().take(m).enumerate() {
        let p = Vec2::new(w[0], w[1]);
        // Signed along-path distance: a waypoint step backwards (x decreasing) counts as
        // negative progress, so a plan slightly behind the vehicle means "stop", never "go".
        let step = p - prev;
        s += if step.x >= 0.0 {
            step.norm()
        } else {
            -step.norm()
        };
        prev = p;
        let t = (j + 1) as f32 * cp.waypoint_dt;
        let basis = 0.5 * t * t;
        num += (s - v * t) * basis;
        den += basis * basis;
    }
    let mut accel = if den > 0.0 { num / den } else { 0.0 };
    if m > 0 && s < 0.05 {
        // (also covers plans that point backwards: this vehicle does not reverse)
        // A plan that stays put means stop now, not creep towards it.
        accel = accel.min(-v / cp.waypoint_dt.min(0.1));
    }

    // Pure pursuit.
    let ld = (cp.lookahead_base + cp.lookahead_gain * v).clamp(cp.lookahead_min, cp.lookahead_max);
    let mut prev = Vec2::ZERO;
    let mut acc = 0.0f32;
    let mut target = None;
    for w in waypoints {
        let p = Vec2::new(w[0], w[1]);
        let seg = p - prev;
        let l = seg.norm();
        if l > 1e-6 {
            if acc + l >= ld {
                target = Some(prev + seg * ((ld - acc) / l));
                break;
            }
            acc += l;
        }
        prev = p;
    }
    let steer = if acc < 0.5 && target.is_none() {
        // A (nearly) stationary plan carries no direction: keep the wheels straight.
        0.0
    } else {
        // A plan shorter than the look-ahead (a stop) is aimed at its end, never extended
        // along its last segment: a stopping plan's last waypoints are centimetres apart,
        // and the direction between them is noise (a step back and aside turned the wheels
        // to full lock at a red light).
        let t = target.unwrap_or(prev);
        let rel = t + Vec2::new(vp.rear_to_center, 0.0);
        let dist = rel.norm().max(1e-3);
        let sin_alpha = rel.y / dist;
        (2.0 * vp.wheelbase * sin_alpha / dist).atan()
    };
    (steer, accel)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DT: f32 = 0.1;

    #[test]
    fn straight_line_constant_acceleration_matches_closed_form() {
        let p = VehicleParams::default();
        let mut s = BicycleState {
            v: 5.0,
            ..Default::default()
        };
        for _ in 0..20 {
            bicycle_step(&mut s, &p, 0.0, 2.0, DT);
        }
        // x = v0 t + a t^2 / 2 = 5*2 + 0.5*2*4 = 14, v = 9.
        assert!((s.pos.x - 14.0).abs() < 1e-4, "{}", s.pos.x);
        assert!((s.v - 9.0).abs() < 1e-5);
        assert_eq!(s.pos.y, 0.0);
    }

    #[test]
    fn braking_stops_exactly_at_v_squared_over_2a() {
        let p = VehicleParams::default();
        let mut s = BicycleState {
            v: 10.0,
            ..Default::default()
        };
        for _ in 0..40 {
            bicycle_step(&mut s, &p, 0.0, -6.0, DT);
        }
        assert_eq!(s.v, 0.0);
        assert!((s.pos.x - 100.0 / 12.0).abs() < 1e-4, "{}", s.pos.x);
    }

    #[test]
    fn constant_steer_traces_circle_of_radius_l_over_tan_delta() {
        let p = VehicleParams::default();
        let delta = 0.3f32;
        let r = p.wheelbase / delta.tan();
        let mut s = BicycleState {
            v: 8.0,
            steer: delta,
            ..Default::default()
        };
        // Centre of the circle is at (0, r) for a left turn from the origin heading +x.
        let centre = Vec2::new(0.0, r);
        let period_steps = (std::f32::consts::TAU * r / 8.0 / DT) as usize;
        for _ in 0..period_steps / 3 {
            bicycle_step(&mut s, &p, delta, 0.0, DT);
            assert!(((s.pos - centre).norm() - r).abs() < 2e-3);
        }
        // Heading advanced by distance / r.
        let dist = 8.0 * DT * (period_steps / 3) as f32;
        let expect = crate::geom::wrap_angle(dist / r);
        assert!((s.yaw - expect).abs() < 1e-3);
        assert!((s.yaw_rate - 8.0 / r).abs() < 1e-4);
    }

    #[test]
    fn steering_rate_and_angle_are_limited() {
        let p = VehicleParams::default();
        let mut s = BicycleState {
            v: 5.0,
            ..Default::default()
        };
        bicycle_step(&mut s, &p, 1.0, 0.0, DT);
        assert!((s.steer - p.max_steer_rate * DT).abs() < 1e-6);
        for _ in 0..20 {
            bicycle_step(&mut s, &p, 1.0, 0.0, DT);
        }
        assert_eq!(s.steer, p.max_steer);
    }

    #[test]
    fn controller_recovers_constant_acceleration_plan() {
        let vp = VehicleParams::default();
        let cp = ControllerParams::default();
        let v = 7.0f32;
        let a = -2.5f32;
        let wps: Vec<[f32; 2]> = (1..=10)
            .map(|j| {
                let t = j as f32 * cp.waypoint_dt;
                [v * t + 0.5 * a * t * t, 0.0]
            })
            .collect();
        let (steer, accel) = track_waypoints(&wps, v, &vp, &cp);
        assert!((accel - a).abs() < 1e-4, "{accel}");
        assert_eq!(steer, 0.0);
    }

    #[test]
    fn plan_behind_the_vehicle_brakes_instead_of_creeping_forward() {
        let vp = VehicleParams::default();
        let cp = ControllerParams::default();
        // A stopped vehicle whose plan drifts 5 cm backwards: the unsigned path length would
        // read this as 5 cm of forward progress and creep towards it.
        let wps: Vec<[f32; 2]> = (1..=10).map(|j| [-0.01 * j as f32, 0.0]).collect();
        let (_, accel) = track_waypoints(&wps, 0.0, &vp, &cp);
        assert!(accel <= 0.0, "{accel}");
        let (_, accel) = track_waypoints(&wps, 0.5, &vp, &cp);
        assert!(accel < -1.0, "{accel}");
    }

    #[test]
    fn a_stopping_plan_is_steered_by_its_end_not_by_the_noise_between_its_last_waypoints() {
        let vp = VehicleParams::default();
        let cp = ControllerParams::default();
        // A learned planner's plan at 3 m/s before a red light (seed 2, eval intersection 6):
        // 2 m long, at most 4 cm to the left, its last step 3 cm back and 1 cm right.
        let wps = [
            [0.44, 0.02],
            [0.84, 0.02],
            [1.15, 0.03],
            [1.47, 0.01],
            [1.72, 0.02],
            [1.78, 0.02],
            [1.94, 0.02],
            [1.98, 0.01],
            [2.03, 0.04],
            [2.00, 0.03],
        ];
        let (steer, _) = track_waypoints(&wps, 3.07, &vp, &cp);
        // Aimed at the end, 3 cm left of the axis: a slight left steer. Extending the last
        // step by the missing 1.3 m of look-ahead aimed behind and right: -0.42 rad here, and
        // -0.57 rad on the unrounded plan.
        let end = Vec2::new(2.00 + vp.rear_to_center, 0.03);
        let ideal = (2.0 * vp.wheelbase * (end.y / end.norm()) / end.norm()).atan();
        assert!((steer - ideal).abs() < 1e-6, "{steer} vs {ideal}");
        assert!(steer > 0.0 && steer < 0.02, "{steer}");
    }

    #[test]
    fn jerk_limit_ramps_comfortable_commands_and_passes_emergencies() {
        let cp = ControllerParams::default();
        // 3.5 m/s^3 over 0.1 s: 0.35 m/s^2 per step either way.
        assert!((limit_jerk(2.0, 0.0, &cp, DT) - 0.35).abs() < 1e-6);
        assert!((limit_jerk(-3.0, -1.0, &cp, DT) + 1.35).abs() < 1e-6);
        assert_eq!(limit_jerk(0.1, 0.0, &cp, DT), 0.1);
        // Braking beyond 4.05 m/s^2 is an emergency, and so is releasing it.
        assert_eq!(limit_jerk(-6.0, 0.0, &cp, DT), -6.0);
        assert_eq!(limit_jerk(0.0, -6.0, &cp, DT), 0.0);
        // 0 disables the limit.
        let off = ControllerParams {
            max_jerk: 0.0,
            ..cp
        };
        assert_eq!(limit_jerk(2.0, 0.0, &off, DT), 2.0);
    }

    #[test]
    fn controller_steers_towards_a_left_arc() {
        let vp = VehicleParams::default();
        let cp = ControllerParams::default();
        // Waypoints on a circle of radius 20 to the left, starting at the box centre.
        let r = 20.0f32;
        let wps: Vec<[f32; 2]> = (1..=10)
            .map(|j| {
                let th = j as f32 * 1.6 / r;
                [r * th.sin(), r * (1.0 - th.cos())]
            })
            .collect();
        let (steer, _) = track_waypoints(&wps, 8.0, &vp, &cp);
        // Pure pursuit from the rear axle on a circle approximates atan(L / R).
        let ideal = (vp.wheelbase / r).atan();
        assert!(
            steer > 0.0 && (steer - ideal).abs() < 0.05,
            "{steer} vs {ideal}"
        );
    }
}
