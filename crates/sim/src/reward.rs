//! The reward: a pure function of one step's [`StepEvents`] and the [`RewardConfig`].
//!
//! CaRL-style: the route-completion gain of the step (percent of the route) times soft
//! penalties in [0, 1] (speeding, raw-motion comfort, driving outside the route lane, a short
//! time to collision or a merging car abreast), minus `terminal_penalty` when the episode
//! terminates.

use crate::config::RewardConfig;
use crate::events::StepEvents;

/// The reward of one step.
pub fn compute(events: &StepEvents, rc: &RewardConfig) -> f32 {
    let e = events;
    let speed_factor = if e.speed > e.speed_limit {
        (1.0 - (e.speed - e.speed_limit) / (rc.speeding_tolerance * e.speed_limit)).max(0.0)
    } else {
        1.0
    };
    // Each of the six nuPlan bounds violated costs a twelfth of the progress.
    let comfort_factor = 1.0 - 0.5 * e.comfort_violations.count_ones() as f32 / 6.0;
    let ttc_factor = if rc.ttc_threshold > 0.0 {
        let closing = e.speed - e.lead_speed;
        if e.lead_gap < 0.0 || (closing > 0.0 && e.lead_gap < closing * rc.ttc_threshold) {
            rc.ttc_factor
        } else {
            1.0
        }
    } else {
        1.0
    };
    let lane_factor = if e.outside_lane {
        rc.outside_lane_factor
    } else {
        1.0
    };
    let mut reward = 100.0 * e.progress_gain / e.route_length
        * speed_factor
        * comfort_factor
        * lane_factor
        * ttc_factor;
    if e.comfort_flagged {
        reward -= rc.comfort_penalty;
    }
    if e.end.is_termination() {
        reward -= rc.terminal_penalty;
    }
    reward
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EndReason;

    /// 2 m of a 200 m route at the limit, comfortable, in lane, nothing ahead: 1 point.
    fn clean_step() -> StepEvents {
        StepEvents {
            end: EndReason::Running,
            progress_gain: 2.0,
            route_length: 200.0,
            speed: 10.0,
            speed_limit: 10.0,
            comfort_violations: 0,
            comfort_flagged: false,
            outside_lane: false,
            lead_gap: f32::INFINITY,
            lead_speed: 0.0,
        }
    }

    #[test]
    fn progress_is_percent_of_the_route() {
        assert_eq!(compute(&clean_step(), &RewardConfig::default()), 1.0);
    }

    #[test]
    fn a_flagged_step_costs_the_comfort_penalty() {
        let rc = RewardConfig {
            comfort_penalty: 0.75,
            ..Default::default()
        };
        let flagged = StepEvents {
            comfort_flagged: true,
            ..clean_step()
        };
        // 1 point of progress, minus the penalty; unflagged steps pay nothing.
        assert_eq!(compute(&flagged, &rc), 0.25);
        assert_eq!(compute(&clean_step(), &rc), 1.0);
        // The default penalty is 1: a flagged step with 1 point of progress earns nothing.
        assert_eq!(compute(&flagged, &RewardConfig::default()), 0.0);
        let off = RewardConfig {
            comfort_penalty: 0.0,
            ..Default::default()
        };
        assert_eq!(compute(&flagged, &off), 1.0);
    }

    #[test]
    fn soft_penalties_multiply() {
        let rc = RewardConfig {
            speeding_tolerance: 0.25,
            outside_lane_factor: 0.5,
            ..Default::default()
        };
        // 12 m/s on a 10 m/s road with tolerance 0.25: 1 - 2 / 2.5 = 0.2.
        let fast = StepEvents {
            speed: 12.0,
            ..clean_step()
        };
        assert!((compute(&fast, &rc) - 0.2).abs() < 1e-6);
        // 15 m/s: the speeding factor bottoms out at 0.
        let faster = StepEvents {
            speed: 15.0,
            ..clean_step()
        };
        assert_eq!(compute(&faster, &rc), 0.0);
        // Three comfort bounds violated: 1 - 0.5 * 3 / 6 = 0.75; outside the lane: x 0.5.
        let rough = StepEvents {
            comfort_violations: 0b100101,
            outside_lane: true,
            ..clean_step()
        };
        assert!((compute(&rough, &rc) - 0.375).abs() < 1e-6);
    }

    #[test]
    fn short_time_to_collision_only_when_enabled() {
        // Closing at 10 - 4 = 6 m/s on a 9 m gap: 1.5 s to collision.
        let close = StepEvents {
            lead_gap: 9.0,
            lead_speed: 4.0,
            ..clean_step()
        };
        let off = RewardConfig {
            ttc_threshold: 0.0,
            ..Default::default()
        };
        assert_eq!(compute(&close, &off), 1.0);
        let on = RewardConfig {
            ttc_threshold: 2.0,
            ttc_factor: 0.5,
            ..Default::default()
        };
        assert_eq!(compute(&close, &on), 0.5);
        // 1.5 s is not below a 1.5 s threshold; an opening gap never is.
        let at = RewardConfig {
            ttc_threshold: 1.5,
            ..on
        };
        assert_eq!(compute(&close, &at), 1.0);
        let opening = StepEvents {
            lead_speed: 12.0,
            ..close
        };
        assert_eq!(compute(&opening, &on), 1.0);
        // A negative gap (merging traffic abreast of the ego, mapped onto the route) is short
        // whatever the speeds; off, it costs nothing.
        let abreast = StepEvents {
            lead_gap: -1.0,
            lead_speed: 12.0,
            ..clean_step()
        };
        assert_eq!(compute(&abreast, &on), 0.5);
        assert_eq!(compute(&abreast, &off), 1.0);
    }

    #[test]
    fn terminations_pay_the_penalty_truncations_do_not() {
        let rc = RewardConfig::default();
        assert_eq!(rc.terminal_penalty, 50.0);
        for (end, expected) in [
            (EndReason::CollisionVehicle, 1.0 - 50.0),
            (EndReason::Blocked, 1.0 - 50.0),
            (EndReason::NonFinite, 1.0 - 50.0),
            (EndReason::RouteCompleted, 1.0),
            (EndReason::TimeLimit, 1.0),
        ] {
            let step = StepEvents {
                end,
                ..clean_step()
            };
            assert_eq!(compute(&step, &rc), expected, "{end:?}");
        }
    }
}
