//! Everything about the simulation that is not the scenario: step length, horizon, the ego
//! vehicle, the waypoint controller, the expert's driving style and the reward. The bottom
//! layer of the crate: plain serialisable values, imported by the modules that use them and
//! importing none of them.

use serde::{Deserialize, Serialize};

/// Everything about the simulation that is not the scenario.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimConfig {
    /// Step length, seconds (10 Hz by default).
    pub dt: f32,
    /// Number of planned waypoints H.
    pub horizon: usize,
    pub vehicle: VehicleParams,
    pub controller: ControllerParams,
    pub expert: ExpertConfig,
    pub reward: RewardConfig,
    /// The route counts as completed within this many metres of its end.
    pub route_end_tolerance: f32,
    /// Terminate as blocked after this many seconds without 0.5 m of progress.
    pub blocked_seconds: f32,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            dt: 0.1,
            horizon: 10,
            vehicle: VehicleParams::default(),
            controller: ControllerParams::default(),
            expert: ExpertConfig::default(),
            reward: RewardConfig::default(),
            route_end_tolerance: 3.0,
            blocked_seconds: 60.0,
        }
    }
}

/// A simulation setting outside its allowed range.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("sim field `{field}` = {value} is out of range: allowed {min} to {max}")]
pub struct SimConfigError {
    pub field: &'static str,
    pub value: f64,
    pub min: f64,
    pub max: f64,
}

impl SimConfig {
    /// Checks the fields a user is likely to set.
    pub fn validate(&self) -> Result<(), SimConfigError> {
        let checks: [(&'static str, f64, f64, f64); 6] = [
            ("dt", self.dt as f64, 0.01, 0.5),
            ("horizon", self.horizon as f64, 2.0, 64.0),
            (
                "controller.waypoint_dt",
                self.controller.waypoint_dt as f64,
                0.05,
                1.0,
            ),
            (
                "reward.terminal_penalty",
                self.reward.terminal_penalty as f64,
                0.0,
                1000.0,
            ),
            ("blocked_seconds", self.blocked_seconds as f64, 1.0, 3600.0),
            (
                "route_end_tolerance",
                self.route_end_tolerance as f64,
                0.0,
                50.0,
            ),
        ];
        for (field, value, min, max) in checks {
            if !(min..=max).contains(&value) {
                return Err(SimConfigError {
                    field,
                    value,
                    min,
                    max,
                });
            }
        }
        Ok(())
    }

    /// Length of one action (flattened waypoints).
    pub fn action_dim(&self) -> usize {
        2 * self.horizon
    }

    /// Simulation steps between two waypoints (`controller.waypoint_dt / dt`), when that is a
    /// whole number (within 0.1%): waypoint j of a plan is then exactly where the vehicle is
    /// `(j + 1) * steps_per_waypoint` steps later, what labels recorded in hindsight need.
    pub fn steps_per_waypoint(&self) -> Option<usize> {
        let ratio = f64::from(self.controller.waypoint_dt) / f64::from(self.dt);
        let steps = ratio.round();
        ((ratio - steps).abs() < 1e-3 && steps >= 1.0).then_some(steps as usize)
    }
}

/// Physical limits of the ego vehicle.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct VehicleParams {
    pub length: f32,
    pub width: f32,
    /// Distance between axles; the reference point of the model is the rear axle.
    pub wheelbase: f32,
    /// Rear axle to box centre.
    pub rear_to_center: f32,
    pub max_steer: f32,
    /// rad/s.
    pub max_steer_rate: f32,
    pub max_accel: f32,
    /// Strongest braking (positive number).
    pub max_brake: f32,
}

impl Default for VehicleParams {
    fn default() -> Self {
        VehicleParams {
            length: 4.6,
            width: 1.9,
            wheelbase: 2.8,
            rear_to_center: 1.4,
            max_steer: 0.6,
            max_steer_rate: 1.2,
            max_accel: 3.0,
            max_brake: 8.0,
        }
    }
}

/// Waypoint-tracking controller settings.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct ControllerParams {
    /// Time between consecutive waypoints, seconds; waypoint j is the planned position at
    /// (j+1) * waypoint_dt.
    pub waypoint_dt: f32,
    /// Number of leading waypoints used to fit the acceleration.
    pub fit_waypoints: usize,
    /// Pure-pursuit look-ahead: `lookahead_base + lookahead_gain * v`, clamped.
    pub lookahead_base: f32,
    pub lookahead_gain: f32,
    pub lookahead_min: f32,
    pub lookahead_max: f32,
    /// Largest change of the acceleration command per second, m/s^3 (nuPlan's bound on the
    /// filtered longitudinal jerk is 4.13); 0 disables the limit (the vehicle module's
    /// `limit_jerk`).
    pub max_jerk: f32,
    /// Braking beyond this (m/s^2, nuPlan's comfort bound) is an emergency: neither entering
    /// nor leaving it is rate-limited.
    pub emergency_decel: f32,
}

impl Default for ControllerParams {
    fn default() -> Self {
        ControllerParams {
            waypoint_dt: 0.2,
            fit_waypoints: 5,
            lookahead_base: 2.0,
            lookahead_gain: 0.45,
            lookahead_min: 3.0,
            lookahead_max: 15.0,
            max_jerk: 3.5,
            emergency_decel: 4.05,
        }
    }
}

/// Expert driving style.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExpertConfig {
    /// Lateral acceleration the expert accepts in bends, m/s^2.
    pub lateral_accel: f32,
    /// Deceleration used to slow for bends ahead, m/s^2.
    pub comfort_brake: f32,
    /// Time headway, s.
    pub headway: f32,
    /// Standstill gap, m.
    pub min_gap: f32,
    pub max_accel: f32,
    /// IDM comfortable deceleration, m/s^2.
    pub idm_brake: f32,
    /// Braking accepted to stop for a yellow light, m/s^2.
    pub yellow_brake: f32,
    /// Time constant of the return to the lane centre, s.
    pub lateral_tau: f32,
    /// Strongest braking outside an emergency, m/s^2 (nuPlan's bound is 4.05).
    pub max_comfort_decel: f32,
}

impl ExpertConfig {
    /// The expert's car-following model towards desired speed `v0`.
    pub fn idm(&self, v0: f32) -> crate::traffic::Idm {
        crate::traffic::Idm {
            v0,
            headway: self.headway,
            s0: self.min_gap,
            a_max: self.max_accel,
            b: self.idm_brake,
        }
    }
}

impl Default for ExpertConfig {
    fn default() -> Self {
        ExpertConfig {
            lateral_accel: 2.5,
            comfort_brake: 2.0,
            headway: 1.2,
            min_gap: 3.0,
            max_accel: 2.0,
            idm_brake: 2.5,
            yellow_brake: 3.5,
            lateral_tau: 1.0,
            max_comfort_decel: 3.8,
        }
    }
}

/// Reward shaping in the style of CaRL: route-completion gain (percent of the route) times
/// soft penalties, plus a terminal penalty.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RewardConfig {
    /// Subtracted on collision, off-road, red light or being blocked. 50 by default (was 20:
    /// measured on seeds 1-3 with the time-to-collision factor, README "How the defaults were
    /// chosen").
    pub terminal_penalty: f32,
    /// Overspeed (fraction of the limit) at which the speeding factor reaches 0.
    pub speeding_tolerance: f32,
    /// Factor applied to progress made with the ego box outside the route lane.
    pub outside_lane_factor: f32,
    /// Progress made while the time to collision with the vehicle or obstacle ahead is below
    /// `ttc_threshold` seconds is multiplied by `ttc_factor` (CaRL: 0.5). 0 disables. Within
    /// the last 60 m before a merge point, the merging road's cars count as ahead once mapped
    /// onto the route, and one abreast of the ego is below any threshold: no other term of
    /// the reward sees that conflict before the collision. On by default (2 s, factor 0.5).
    pub ttc_threshold: f32,
    pub ttc_factor: f32,
    /// Subtracted on every step whose motion fails nuPlan's comfort check on the filtered
    /// quantities the episode metric uses (so the residual cannot buy progress with a ride the
    /// metric fails). 0 disables. 1 by default: measured on seeds 1-3, the refined planner's
    /// comfort pass rate went from 14-20% (0) to 66-77%, above the SFT planner's; 4 taught it
    /// not to brake. `configs/sumo.toml` sets 0: the planner cloned from SUMO's driver is
    /// flagged on about 25 steps an episode, a quarter of a route's 100 points at 1 a step,
    /// and 1 taught refinement there not to brake for red lights.
    pub comfort_penalty: f32,
}

impl Default for RewardConfig {
    fn default() -> Self {
        RewardConfig {
            terminal_penalty: 50.0,
            speeding_tolerance: 0.25,
            outside_lane_factor: 0.0,
            ttc_threshold: 2.0,
            ttc_factor: 0.5,
            comfort_penalty: 1.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waypoints_fall_on_whole_steps_or_not_at_all() {
        let mut cfg = SimConfig::default();
        assert_eq!(cfg.steps_per_waypoint(), Some(2));
        cfg.dt = 0.05;
        assert_eq!(cfg.steps_per_waypoint(), Some(4));
        cfg.dt = 0.2;
        assert_eq!(cfg.steps_per_waypoint(), Some(1));
        cfg.dt = 0.15;
        assert_eq!(cfg.steps_per_waypoint(), None);
        cfg.dt = 0.3;
        assert_eq!(cfg.steps_per_waypoint(), None);
    }
}
