//! Evaluation cannot be fooled: a planner whose plans are NaN must score as a failure on every
//! scenario, never as a perfect driver.

use deltaplan_eval::{closed_loop, summarize, Driver, Metric, PlannerError};
use deltaplan_sim::{Difficulty, Family, SimConfig, Split};

#[test]
fn a_nan_planner_fails_every_episode() {
    let sim = SimConfig::default();
    let specs = Split::Eval.suite(&Family::ALL, 2, Difficulty::default());
    let mut nan_planner = |_obs: &[f32], plans: &mut [f32]| -> Result<(), PlannerError> {
        plans.fill(f32::NAN);
        Ok(())
    };
    let episodes = closed_loop(sim, &specs, &mut Driver::Planner(&mut nan_planner)).unwrap();
    assert_eq!(episodes.len(), specs.len());
    let s = summarize(&episodes).overall;
    assert_eq!(s[Metric::FailureRate].mean, 1.0, "{episodes:?}");
    // Nothing is driven: route completion is where the ego stood at the start (3-20 % of the
    // route), and the driving score cannot exceed it (a perfect driver scores 100).
    for e in &episodes {
        assert_eq!(e.end, deltaplan_sim::EndReason::NonFinite);
        assert!(e.route_completion < 25.0, "{e:?}");
    }
    assert!(
        s[Metric::DrivingScore].mean < 15.0,
        "driving score {}",
        s[Metric::DrivingScore].mean
    );
}
