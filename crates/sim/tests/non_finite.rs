//! Evaluation that cannot be fooled: a planner whose plans are not finite numbers fails every
//! episode, and its route completion is what was driven before the first non-finite plan.

use deltaplan_sim::{
    expert_plan, BatchEnv, Difficulty, EndReason, EpisodeStats, Family, ScenarioSpec, SimConfig,
    Split, StepBuffers, World,
};

/// Runs every scenario once with plans from `planner(step, world index, plan)`.
fn evaluate(
    specs: &[ScenarioSpec],
    planner: impl Fn(usize, usize, &mut [f32]),
) -> Vec<EpisodeStats> {
    let cfg = SimConfig::default();
    let n = specs.len();
    let mut env = BatchEnv::fixed(cfg, specs.to_vec());
    let mut buf = StepBuffers::new(n);
    let a = cfg.action_dim();
    let mut plans = vec![0.0; n * a];
    let mut t = 0;
    while !env.all_idle() {
        env.expert_actions(&mut plans);
        for (i, p) in plans.chunks_exact_mut(a).enumerate() {
            planner(t, i, p);
        }
        env.step(&plans, &mut buf);
        assert!(
            buf.obs.iter().chain(&buf.final_obs).all(|x| x.is_finite()),
            "observations stay finite"
        );
        t += 1;
    }
    (0..n).map(|i| *env.finished(i)).collect()
}

fn suite() -> Vec<ScenarioSpec> {
    Split::Eval.suite(&Family::ALL, 4, Difficulty::default())
}

#[test]
fn a_nan_planner_fails_every_episode_with_a_low_driving_score() {
    let specs = suite();
    let stats = evaluate(&specs, |_, _, p| p.fill(f32::NAN));
    let n = stats.len() as f32;
    let failures = stats.iter().filter(|s| s.is_failure()).count() as f32 / n;
    let ds = stats.iter().map(|s| s.driving_score()).sum::<f32>() / n;
    println!("NaN planner: failures {failures}, driving score {ds}");
    assert_eq!(failures, 1.0);
    for (s, spec) in stats.iter().zip(&specs) {
        assert_eq!(s.end, EndReason::NonFinite);
        assert_eq!(s.steps, 0, "nothing was driven");
        // Route completion is where the ego stood when the episode began: a fresh world of
        // the same scenario reads the same.
        let mut w = World::new(SimConfig::default());
        w.reset(*spec);
        assert_eq!(s.route_completion, w.route_completion());
        assert!(s.route_completion < 25.0, "{s:?}");
    }
    // The ego starts 3-20 % of the way along its route; that is all a broken planner gets.
    assert!(ds < 15.0, "driving score {ds}");
}

#[test]
fn a_planner_that_breaks_mid_episode_keeps_what_it_drove() {
    // The expert drives 30 steps, then one waypoint becomes infinite.
    let specs = suite();
    let stats = evaluate(&specs, |t, _, p| {
        if t >= 30 {
            p[7] = f32::INFINITY;
        }
    });
    for (s, spec) in stats.iter().zip(&specs) {
        let mut w = World::new(SimConfig::default());
        w.reset(*spec);
        let mut plan = vec![0.0; SimConfig::default().action_dim()];
        let mut end = EndReason::Running;
        for _ in 0..30 {
            expert_plan(&w, &mut plan);
            end = w.step(&plan).end;
            if end != EndReason::Running {
                break;
            }
        }
        if end == EndReason::Running {
            assert_eq!(s.end, EndReason::NonFinite);
            assert!(s.is_failure());
            assert_eq!(s.steps, 30);
            assert_eq!(s.route_completion, w.route_completion(), "{s:?}");
            assert!(s.route_completion < 100.0);
        } else {
            assert_eq!(s.end, end, "ended before the plan broke");
        }
    }
}

#[test]
fn a_non_finite_vehicle_state_ends_the_episode() {
    let cfg = SimConfig::default();
    let mut w = World::new(cfg);
    w.reset(suite()[0]);
    let mut plan = vec![0.0; cfg.action_dim()];
    for _ in 0..5 {
        expert_plan(&w, &mut plan);
        assert_eq!(w.step(&plan).end, EndReason::Running);
    }
    let driven = w.route_completion();
    w.ego.v = f32::NAN;
    expert_plan(&w, &mut plan);
    plan.iter_mut()
        .for_each(|x| *x = if x.is_finite() { *x } else { 1.0 });
    let r = w.step(&plan);
    assert_eq!(r.end, EndReason::NonFinite);
    assert_eq!(r.reward, -cfg.reward.terminal_penalty);
    assert_eq!(w.stats.end, EndReason::NonFinite);
    assert_eq!(w.stats.route_completion, driven);
    assert!(w.stats.is_failure());
}
