//! Per-episode infraction records and the driving metrics the field uses.
//!
//! Driving score follows the CARLA Leaderboard 2.x definition (version 2.0/2.1 multipliers):
//! `DS = RC x P`, `P = prod(p_i^count_i)` with collision with a vehicle 0.60, with a static
//! object 0.65, running a red light 0.70, and the outside-route-lanes factor
//! `1 - pct/100` (percentage of the route driven outside the route lanes). Pedestrian (0.50),
//! stop-sign (0.80) and scenario-timeout (0.70) multipliers are listed for completeness; this
//! simulator has no pedestrians, stop signs or scenario timeouts.
//!
//! Comfort uses nuPlan's bounds on the ego's realised motion.

use crate::events::EndReason;
use crate::spec::Family;
use crate::vehicle::BicycleState;
use serde::{Deserialize, Serialize};

/// CARLA Leaderboard 2.x infraction multipliers.
pub mod leaderboard2 {
    pub const COLLISION_PEDESTRIAN: f32 = 0.50;
    pub const COLLISION_VEHICLE: f32 = 0.60;
    pub const COLLISION_STATIC: f32 = 0.65;
    pub const RED_LIGHT: f32 = 0.70;
    pub const STOP_SIGN: f32 = 0.80;
    pub const SCENARIO_TIMEOUT: f32 = 0.70;
}

/// nuPlan comfort bounds.
pub mod nuplan_comfort {
    pub const MIN_LON_ACCEL: f32 = -4.05;
    pub const MAX_LON_ACCEL: f32 = 2.40;
    pub const MAX_ABS_LAT_ACCEL: f32 = 4.89;
    pub const MAX_ABS_JERK: f32 = 8.37;
    pub const MAX_ABS_LON_JERK: f32 = 4.13;
    pub const MAX_ABS_YAW_RATE: f32 = 0.95;
    pub const MAX_ABS_YAW_ACCEL: f32 = 1.93;
    /// Names of the six checks, in bit order of [`super::comfort_violations`].
    pub const NAMES: [&str; 6] = [
        "lon_accel",
        "lat_accel",
        "jerk",
        "lon_jerk",
        "yaw_rate",
        "yaw_accel",
    ];
}

/// Bit set of nuPlan comfort bounds violated over one step (bit i = `NAMES[i]`). Derivatives
/// (jerk, yaw acceleration) are only checked when `has_prev` (not on an episode's first step).
pub fn comfort_violations(prev: &BicycleState, cur: &BicycleState, dt: f32, has_prev: bool) -> u8 {
    use nuplan_comfort::*;
    let lon = cur.accel;
    let lat = cur.v * cur.yaw_rate;
    let mut bits = 0u8;
    if !(MIN_LON_ACCEL..=MAX_LON_ACCEL).contains(&lon) {
        bits |= 1;
    }
    if lat.abs() > MAX_ABS_LAT_ACCEL {
        bits |= 2;
    }
    if has_prev {
        let lon_jerk = (lon - prev.accel) / dt;
        let lat_jerk = (lat - prev.v * prev.yaw_rate) / dt;
        if (lon_jerk * lon_jerk + lat_jerk * lat_jerk).sqrt() > MAX_ABS_JERK {
            bits |= 4;
        }
        if lon_jerk.abs() > MAX_ABS_LON_JERK {
            bits |= 8;
        }
        if ((cur.yaw_rate - prev.yaw_rate) / dt).abs() > MAX_ABS_YAW_ACCEL {
            bits |= 32;
        }
    }
    if cur.yaw_rate.abs() > MAX_ABS_YAW_RATE {
        bits |= 16;
    }
    bits
}

/// Samples in the comfort filter's window (0.5 s at 10 Hz).
pub const COMFORT_WINDOW: usize = 5;

/// nuPlan checks comfort on a filtered ego trajectory (Savitzky-Golay derivatives), not on raw
/// step-to-step differences, which would flag almost every step of any controller at 10 Hz.
/// This filter does the same over a sliding window of [`COMFORT_WINDOW`] steps: accelerations
/// and yaw rate are window means, jerks and yaw acceleration are least-squares slopes (the
/// first-order Savitzky-Golay derivative). Fixed-size state: no allocation.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ComfortFilter {
    /// Ring of (longitudinal acceleration, lateral acceleration, yaw rate).
    ring: [[f32; 3]; COMFORT_WINDOW],
    len: usize,
    head: usize,
}

impl ComfortFilter {
    /// Adds one step of realised motion; returns the violated bounds (bits as in
    /// [`comfort_violations`]) once the window is full, 0 before.
    pub fn push(&mut self, cur: &BicycleState, dt: f32) -> u8 {
        use nuplan_comfort::*;
        self.ring[self.head] = [cur.accel, cur.v * cur.yaw_rate, cur.yaw_rate];
        self.head = (self.head + 1) % COMFORT_WINDOW;
        self.len = (self.len + 1).min(COMFORT_WINDOW);
        if self.len < COMFORT_WINDOW {
            return 0;
        }
        // Oldest first.
        let at = |k: usize| self.ring[(self.head + k) % COMFORT_WINDOW];
        let n = COMFORT_WINDOW as f32;
        let t_mean = 0.5 * (n - 1.0);
        let denom: f32 = (0..COMFORT_WINDOW)
            .map(|k| (k as f32 - t_mean).powi(2))
            .sum::<f32>()
            * dt;
        let mut mean = [0.0f32; 3];
        let mut slope = [0.0f32; 3];
        for k in 0..COMFORT_WINDOW {
            let v = at(k);
            for c in 0..3 {
                mean[c] += v[c] / n;
                slope[c] += (k as f32 - t_mean) * v[c];
            }
        }
        slope.iter_mut().for_each(|x| *x /= denom);
        let [lon, lat, yaw_rate] = mean;
        let [lon_jerk, lat_jerk, yaw_accel] = slope;
        let mut bits = 0u8;
        if !(MIN_LON_ACCEL..=MAX_LON_ACCEL).contains(&lon) {
            bits |= 1;
        }
        if lat.abs() > MAX_ABS_LAT_ACCEL {
            bits |= 2;
        }
        if (lon_jerk * lon_jerk + lat_jerk * lat_jerk).sqrt() > MAX_ABS_JERK {
            bits |= 4;
        }
        if lon_jerk.abs() > MAX_ABS_LON_JERK {
            bits |= 8;
        }
        if yaw_rate.abs() > MAX_ABS_YAW_RATE {
            bits |= 16;
        }
        if yaw_accel.abs() > MAX_ABS_YAW_ACCEL {
            bits |= 32;
        }
        bits
    }
}

/// Everything recorded about one episode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EpisodeStats {
    pub family: Family,
    pub seed: u64,
    pub steps: u32,
    pub end: EndReason,
    /// Percent of the route completed.
    pub route_completion: f32,
    pub collisions_vehicle: u32,
    pub collisions_static: u32,
    pub offroad: u32,
    pub red_lights: u32,
    pub blocked: bool,
    pub timeout: bool,
    /// Route metres gained while the ego box was outside the route lane.
    pub outside_lane_distance: f32,
    /// Steps at which the filtered trajectory ([`ComfortFilter`]) violates each nuPlan comfort
    /// bound (order of `nuplan_comfort::NAMES`).
    pub comfort_steps: [u32; 6],
    pub speed_sum: f32,
    /// Route length, metres.
    pub route_length: f32,
}

impl EpisodeStats {
    pub(crate) fn record_comfort(&mut self, bits: u8) {
        for (i, c) in self.comfort_steps.iter_mut().enumerate() {
            *c += u32::from(bits >> i & 1);
        }
    }

    pub(crate) fn finish(&mut self, end: EndReason, route_completion: f32) {
        self.end = end;
        self.route_completion = route_completion;
    }

    /// CARLA Leaderboard 2.x infraction penalty P in [0, 1].
    pub fn infraction_penalty(&self) -> f32 {
        use leaderboard2::*;
        let outside_pct = if self.route_length > 0.0 {
            (100.0 * self.outside_lane_distance / self.route_length).clamp(0.0, 100.0)
        } else {
            0.0
        };
        COLLISION_VEHICLE.powi(self.collisions_vehicle as i32)
            * COLLISION_STATIC.powi(self.collisions_static as i32)
            * RED_LIGHT.powi(self.red_lights as i32)
            * (1.0 - outside_pct / 100.0)
    }

    /// CARLA Leaderboard 2.x driving score, 0-100.
    pub fn driving_score(&self) -> f32 {
        self.route_completion * self.infraction_penalty()
    }

    /// Whether every nuPlan comfort bound held on every step.
    pub fn comfort_pass(&self) -> bool {
        self.comfort_steps.iter().all(|&c| c == 0)
    }

    pub fn had_collision(&self) -> bool {
        self.collisions_vehicle + self.collisions_static > 0
    }

    /// The one definition of a failed episode: a collision, leaving the road, or a planner
    /// that produced non-finite numbers. Red lights and being blocked are infractions or
    /// stalls, not failures.
    pub fn is_failure(&self) -> bool {
        self.had_collision() || self.offroad > 0 || self.end == EndReason::NonFinite
    }

    pub fn mean_speed(&self) -> f32 {
        if self.steps == 0 {
            0.0
        } else {
            self.speed_sum / self.steps as f32
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driving_score_multiplies_penalties() {
        let mut e = EpisodeStats {
            route_completion: 80.0,
            route_length: 200.0,
            ..Default::default()
        };
        assert_eq!(e.driving_score(), 80.0);
        e.collisions_vehicle = 1;
        e.red_lights = 1;
        // 80 * 0.6 * 0.7 = 33.6
        assert!((e.driving_score() - 33.6).abs() < 1e-4);
        e.outside_lane_distance = 20.0; // 10 % of the route
        assert!((e.driving_score() - 33.6 * 0.9).abs() < 1e-4);
        e.collisions_static = 2;
        assert!((e.infraction_penalty() - 0.6 * 0.7 * 0.65 * 0.65 * 0.9).abs() < 1e-6);
    }

    #[test]
    fn failure_is_collision_offroad_or_non_finite() {
        let clean = EpisodeStats {
            end: EndReason::RouteCompleted,
            red_lights: 1,
            blocked: true,
            ..Default::default()
        };
        assert!(
            !clean.is_failure(),
            "red lights and stalls are not failures"
        );
        for failed in [
            EpisodeStats {
                collisions_vehicle: 1,
                ..clean
            },
            EpisodeStats {
                collisions_static: 1,
                ..clean
            },
            EpisodeStats {
                offroad: 1,
                ..clean
            },
            EpisodeStats {
                end: EndReason::NonFinite,
                ..clean
            },
        ] {
            assert!(failed.is_failure(), "{failed:?}");
        }
        assert!(EndReason::NonFinite.is_termination());
    }

    #[test]
    fn comfort_filter_measures_slopes_and_ignores_step_noise() {
        let dt = 0.1;
        // A constant longitudinal jerk of 5 m/s^3 (above 4.13): the filter's slope is exact.
        let mut f = ComfortFilter::default();
        let mut bits = 0;
        for k in 0..8 {
            let s = BicycleState {
                v: 10.0,
                accel: -2.0 + 5.0 * dt * k as f32,
                ..Default::default()
            };
            bits = f.push(&s, dt);
            if k < COMFORT_WINDOW - 1 {
                assert_eq!(bits, 0, "no verdict before the window is full");
            }
        }
        assert_eq!(bits, 8, "lon jerk only");
        // Accelerations alternating +-0.3 m/s^2 step to step: raw differences read 6 m/s^3 of
        // jerk, the filtered trajectory is smooth.
        let mut f = ComfortFilter::default();
        let mut raw = 0;
        let mut prev = BicycleState::default();
        for k in 0..20 {
            let s = BicycleState {
                v: 10.0,
                accel: if k % 2 == 0 { 0.3 } else { -0.3 },
                ..Default::default()
            };
            assert_eq!(f.push(&s, dt), 0);
            raw |= comfort_violations(&prev, &s, dt, k > 0);
            prev = s;
        }
        assert_ne!(raw & 8, 0);
    }

    #[test]
    fn comfort_bits() {
        let prev = BicycleState {
            v: 10.0,
            accel: 0.0,
            ..Default::default()
        };
        let mut cur = prev;
        cur.accel = -5.0; // below -4.05, and jerk -50 m/s^3
        let b = comfort_violations(&prev, &cur, 0.1, true);
        assert_eq!(b, 1 | 4 | 8);
        // Without a previous step, derivatives are not checked.
        assert_eq!(comfort_violations(&prev, &cur, 0.1, false), 1);
        let mut turn = prev;
        turn.yaw_rate = 0.5; // lat accel 5.0 > 4.89; yaw accel 5 > 1.93; lateral jerk 50
        let b = comfort_violations(&prev, &turn, 0.1, true);
        assert_eq!(b, 2 | 4 | 32);
    }
}
