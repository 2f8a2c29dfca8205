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
//!
//! nuPlan's closed-loop score ([`EpisodeStats::nuplan_score`], 0-100 here) is the product of
//! its multiplier metrics times the weighted average of the others, from quantities the
//! world records per step without allocating; where this simulator's version differs from
//! nuPlan's is listed on [`nuplan_score`].

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

/// nuPlan's closed-loop score (CLS), as this simulator computes it.
///
/// `score = 100 x no_at_fault_collision x drivable_area x driving_direction x making_progress
/// x (5 progress + 5 ttc + 4 speed_limit + 2 comfort) / 16`, with
/// - no at-fault collision: 0 after an at-fault collision with a vehicle, 0.5 after one with a
///   static obstacle, 1 otherwise;
/// - drivable area compliance: 0 if the ego left the drivable area, 1 otherwise;
/// - driving direction compliance: 1 if the ego drove less than 2 m against the route's
///   direction, 0.5 if less than 6 m, 0 otherwise;
/// - making progress: 1 if the route completion is at least 20%, 0 otherwise;
/// - progress: the route completion as a fraction;
/// - time to collision within bound: 1 if the TTC to the vehicle or obstacle ahead never fell
///   below 0.95 s, 0 otherwise;
/// - speed-limit compliance: `max(0, 1 - mean overspeed / 2.23 m/s)`, the mean over steps;
/// - comfort: [`EpisodeStats::comfort_pass`].
///
/// Where this differs from nuPlan's: at fault is approximated (a collision with a vehicle is
/// not at fault when the ego was rear-ended, i.e. the other vehicle's centre is behind the
/// ego's and within its width, or when the ego stood still; a side swipe while merging or
/// changing lanes is the ego's fault; nuPlan
/// classifies the collision geometry in more detail, and counts pedestrians and cyclists,
/// which this simulator lacks); the progress reference is this scenario's route, not an
/// expert log's progress; TTC is measured to the leader along the route (a constant-speed
/// closing time), not by projecting every agent's box forward; direction compliance is the
/// distance driven with the heading more than 90 degrees from the route, not nuPlan's
/// per-lane check over 1 s windows; any collision ends an episode here, so later
/// not-at-fault collisions never count; a non-finite plan or state scores 0.
pub mod nuplan_score {
    /// Progress ratio below which the ego counts as not making progress.
    pub const MIN_PROGRESS_RATIO: f32 = 0.2;
    /// Time-to-collision bound, seconds.
    pub const TTC_BOUND: f32 = 0.95;
    /// Mean overspeed at which speed-limit compliance reaches 0, m/s.
    pub const MAX_OVERSPEED: f32 = 2.23;
    /// Distances driven against the route direction for direction compliance 1 and 0.5, m.
    pub const WRONG_WAY_COMPLIANT: f32 = 2.0;
    pub const WRONG_WAY_TOLERATED: f32 = 6.0;
    /// Weights of progress, TTC, speed limit and comfort.
    pub const WEIGHTS: [f32; 4] = [5.0, 5.0, 4.0, 2.0];
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
#[serde(default)]
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
    /// Steps at which the filtered trajectory violates any nuPlan comfort bound.
    pub comfort_violation_steps: u32,
    /// Steps braking harder than nuPlan's bound (-4.05 m/s^2) while the vehicle or obstacle
    /// ahead demanded at least that much (matching its speed within the gap): uncomfortable
    /// because the scene forced it, not by choice.
    pub forced_brake_steps: u32,
    /// Of `collisions_vehicle`, those not at fault (the ego was rear-ended, or stood still).
    pub collisions_vehicle_not_at_fault: u32,
    /// Steps at which the time to collision with the vehicle or obstacle ahead was below
    /// `nuplan_score::TTC_BOUND`.
    pub ttc_violation_steps: u32,
    /// Sum over steps of the speed above the lane's limit, m/s.
    pub overspeed_sum: f32,
    /// Metres driven with the heading more than 90 degrees from the route direction.
    pub wrong_way_distance: f32,
}

/// The values of nuPlan's closed-loop metrics for one episode, named as nuPlan names them
/// (the columns of its metric aggregator); [`nuplan_score`] says how each is measured here
/// and where that differs from nuPlan.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NuplanMetrics {
    /// Multiplier: 0 after an at-fault vehicle collision, 0.5 after a static one, else 1.
    pub no_ego_at_fault_collisions: f32,
    /// Multiplier: 0 if the ego left the drivable area, else 1.
    pub drivable_area_compliance: f32,
    /// Multiplier: 1, 0.5 or 0 by the distance driven against the route.
    pub driving_direction_compliance: f32,
    /// Multiplier: 1 if the progress ratio reached `nuplan_score::MIN_PROGRESS_RATIO`.
    pub ego_is_making_progress: f32,
    /// Weight 5: route completion as a fraction (against the route, not an expert log).
    pub ego_progress_along_expert_route: f32,
    /// Weight 5: 1 if the time to collision never fell below `nuplan_score::TTC_BOUND`.
    pub time_to_collision_within_bound: f32,
    /// Weight 4: `max(0, 1 - mean overspeed / nuplan_score::MAX_OVERSPEED)`.
    pub speed_limit_compliance: f32,
    /// Weight 2: 1 if every comfort bound held on every step.
    pub ego_is_comfortable: f32,
}

impl NuplanMetrics {
    /// nuPlan's scenario score, 0-100: the multipliers times the weighted average.
    pub fn score(&self) -> f32 {
        let [w_progress, w_ttc, w_speed, w_comfort] = nuplan_score::WEIGHTS;
        let weighted = (w_progress * self.ego_progress_along_expert_route
            + w_ttc * self.time_to_collision_within_bound
            + w_speed * self.speed_limit_compliance
            + w_comfort * self.ego_is_comfortable)
            / nuplan_score::WEIGHTS.iter().sum::<f32>();
        100.0
            * self.no_ego_at_fault_collisions
            * self.drivable_area_compliance
            * self.driving_direction_compliance
            * self.ego_is_making_progress
            * weighted
    }
}

impl EpisodeStats {
    pub(crate) fn record_comfort(&mut self, bits: u8) {
        for (i, c) in self.comfort_steps.iter_mut().enumerate() {
            *c += u32::from(bits >> i & 1);
        }
        self.comfort_violation_steps += u32::from(bits != 0);
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

    /// nuPlan's closed-loop score, 0-100 (see [`nuplan_score`] for the definition and where it
    /// differs from nuPlan's); 0 for a non-finite plan or state.
    pub fn nuplan_score(&self) -> f32 {
        self.nuplan_metrics().map_or(0.0, |m| m.score())
    }

    /// The metric values nuPlan's score is made of, as this simulator measures them; `None`
    /// after a non-finite plan or state (nothing was measured that a score could stand on).
    pub fn nuplan_metrics(&self) -> Option<NuplanMetrics> {
        use nuplan_score::*;
        if self.end == EndReason::NonFinite {
            return None;
        }
        let at_fault_vehicle = self.collisions_vehicle > self.collisions_vehicle_not_at_fault;
        let no_ego_at_fault_collisions = if at_fault_vehicle {
            0.0
        } else if self.collisions_static > 0 {
            0.5
        } else {
            1.0
        };
        let drivable_area_compliance = if self.offroad > 0 { 0.0 } else { 1.0 };
        let driving_direction_compliance = if self.wrong_way_distance < WRONG_WAY_COMPLIANT {
            1.0
        } else if self.wrong_way_distance < WRONG_WAY_TOLERATED {
            0.5
        } else {
            0.0
        };
        let progress = (self.route_completion / 100.0).clamp(0.0, 1.0);
        let ego_is_making_progress = if progress >= MIN_PROGRESS_RATIO {
            1.0
        } else {
            0.0
        };
        let time_to_collision_within_bound = if self.ttc_violation_steps == 0 {
            1.0
        } else {
            0.0
        };
        let mean_overspeed = if self.steps == 0 {
            0.0
        } else {
            self.overspeed_sum / self.steps as f32
        };
        Some(NuplanMetrics {
            no_ego_at_fault_collisions,
            drivable_area_compliance,
            driving_direction_compliance,
            ego_is_making_progress,
            ego_progress_along_expert_route: progress,
            time_to_collision_within_bound,
            speed_limit_compliance: (1.0 - mean_overspeed / MAX_OVERSPEED).max(0.0),
            ego_is_comfortable: if self.comfort_pass() { 1.0 } else { 0.0 },
        })
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
    fn nuplan_score_of_hand_made_episodes() {
        let clean = EpisodeStats {
            end: EndReason::RouteCompleted,
            route_completion: 100.0,
            steps: 10,
            ..Default::default()
        };
        assert_eq!(clean.nuplan_score(), 100.0);
        // 80% progress, one comfort-violating step, mean overspeed 1.115 m/s (half the bound):
        // 100 * (5 * 0.8 + 5 * 1 + 4 * 0.5 + 2 * 0) / 16 = 68.75.
        let rough = EpisodeStats {
            route_completion: 80.0,
            comfort_steps: [1, 0, 0, 0, 0, 0],
            overspeed_sum: 11.15,
            ..clean
        };
        assert!(
            (rough.nuplan_score() - 68.75).abs() < 1e-3,
            "{}",
            rough.nuplan_score()
        );
        // A TTC violation loses the 5 TTC points; 3 m against the route halves the score.
        let close = EpisodeStats {
            ttc_violation_steps: 2,
            wrong_way_distance: 3.0,
            ..clean
        };
        assert!((close.nuplan_score() - 0.5 * 100.0 * 11.0 / 16.0).abs() < 1e-3);
        // Multipliers: a static collision halves, an at-fault vehicle collision, leaving the
        // road, under 20% progress or a non-finite plan zero the score; being rear-ended
        // costs nothing.
        let static_hit = EpisodeStats {
            collisions_static: 1,
            ..clean
        };
        assert_eq!(static_hit.nuplan_score(), 50.0);
        let rear_ended = EpisodeStats {
            collisions_vehicle: 1,
            collisions_vehicle_not_at_fault: 1,
            ..clean
        };
        assert_eq!(rear_ended.nuplan_score(), 100.0);
        for zero in [
            EpisodeStats {
                collisions_vehicle: 1,
                ..clean
            },
            EpisodeStats {
                offroad: 1,
                ..clean
            },
            EpisodeStats {
                route_completion: 19.0,
                ..clean
            },
            EpisodeStats {
                wrong_way_distance: 6.0,
                ..clean
            },
            EpisodeStats {
                end: EndReason::NonFinite,
                ..clean
            },
        ] {
            assert_eq!(zero.nuplan_score(), 0.0, "{zero:?}");
        }
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
