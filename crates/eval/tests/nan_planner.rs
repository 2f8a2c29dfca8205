//! Evaluation cannot be fooled: a planner whose plans are NaN must score as a failure on every
//! scenario, never as a perfect driver.

use deltaplan_eval::{closed_loop, summarize, Driver, Metric, PlannerError};
use deltaplan_sim::{Difficulty, Family, SimConfig, Split};

#[test]
#[ignore = "needs sim NonFinite: a non-finite ego state must end the episode as a failure"]
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
    assert!(
        s[Metric::DrivingScore].mean < 1.0,
        "driving score {}",
        s[Metric::DrivingScore].mean
    );
    assert!(
        s[Metric::RouteCompletion].mean < 1.0,
        "route completion is what was driven: {}",
        s[Metric::RouteCompletion].mean
    );
}
