//! NaN and infinity injected where they appear in practice (a simulator's observation or
//! reward, a frozen planner's plan, a hopeless loss scale, a weight) are caught where they
//! first appear and named (what, which world and scenario, which iteration), before an update;
//! no checkpoint can hold a non-finite value, and one flipped bit is refused on load.

use std::sync::atomic::{AtomicUsize, Ordering};

use deltaplan_learn::refine::{load_policy, RefineConfig, Refiner};
use deltaplan_learn::scenarios::TrainScenarios;
use deltaplan_learn::{FrozenPlanner, LearnError, PlannerError};
use deltaplan_sim::batch::StepBuffers;
use deltaplan_sim::env::{ExpertEnv, ResumableEnv, VecEnv};
use deltaplan_sim::{BatchEnv, EnvSnapshot, EpisodeStats, SimConfig, SnapshotError, OBS_DIM};

/// Straight-ahead plans at a constant speed; from its `nan_from`-th call on, world 2's plan
/// is NaN (a user planner's bad output).
struct Planner {
    calls: AtomicUsize,
    nan_from: usize,
    zeros: Vec<f32>,
    ones: Vec<f32>,
}

impl Planner {
    fn new(nan_from: usize) -> Self {
        Planner {
            calls: AtomicUsize::new(0),
            nan_from,
            zeros: vec![0.0; OBS_DIM],
            ones: vec![1.0; OBS_DIM],
        }
    }
}

impl FrozenPlanner for Planner {
    type Workspace = ();
    fn obs_dim(&self) -> usize {
        OBS_DIM
    }
    fn horizon(&self) -> usize {
        10
    }
    fn embedding_dim(&self) -> usize {
        0
    }
    fn plan_batch(
        &self,
        obs: &[f32],
        _ws: &mut (),
        plans: &mut [f32],
        _embedding: &mut [f32],
    ) -> Result<(), PlannerError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        for plan in plans.chunks_exact_mut(20) {
            for (j, wp) in plan.chunks_exact_mut(2).enumerate() {
                wp[0] = 8.0 * 0.2 * (j + 1) as f32;
                wp[1] = 0.0;
            }
        }
        if call >= self.nan_from && obs.len() / OBS_DIM > 2 {
            plans[2 * 20 + 5] = f32::NAN;
        }
        Ok(())
    }
    fn obs_normalisation(&self) -> (&[f32], &[f32]) {
        (&self.zeros, &self.ones)
    }
    fn weights_hash(&self) -> String {
        "constant".into()
    }
}

/// What a broken simulator corrupts.
#[derive(Clone, Copy)]
enum Poison {
    Observation,
    Reward,
}

/// The built-in simulator, except that its `at`-th step returns a NaN in world 3.
struct Broken {
    inner: BatchEnv,
    poison: Poison,
    at: usize,
    steps: usize,
}

impl VecEnv for Broken {
    fn num_envs(&self) -> usize {
        self.inner.num_envs()
    }
    fn obs_dim(&self) -> usize {
        VecEnv::obs_dim(&self.inner)
    }
    fn action_dim(&self) -> usize {
        VecEnv::action_dim(&self.inner)
    }
    fn observe(&self, obs: &mut [f32]) {
        VecEnv::observe(&self.inner, obs)
    }
    fn step(&mut self, plans: &[f32], out: &mut StepBuffers) {
        VecEnv::step(&mut self.inner, plans, out);
        self.steps += 1;
        if self.steps == self.at {
            match self.poison {
                Poison::Observation => out.obs[3 * OBS_DIM + 7] = f32::INFINITY,
                Poison::Reward => out.reward[3] = f32::NAN,
            }
        }
    }
    fn finished(&self, i: usize) -> &EpisodeStats {
        VecEnv::finished(&self.inner, i)
    }
    fn all_idle(&self) -> bool {
        VecEnv::all_idle(&self.inner)
    }
    fn world_label(&self, i: usize) -> String {
        self.inner.world_label(i)
    }
}

impl ExpertEnv for Broken {
    fn expert_actions(&self, plans: &mut [f32]) {
        ExpertEnv::expert_actions(&self.inner, plans)
    }
    fn scenario(&self, i: usize) -> deltaplan_sim::ScenarioSpec {
        ExpertEnv::scenario(&self.inner, i)
    }
}

impl ResumableEnv for Broken {
    fn snapshot(&self) -> EnvSnapshot {
        ResumableEnv::snapshot(&self.inner)
    }
    fn restore(&mut self, snapshot: &EnvSnapshot) -> Result<(), SnapshotError> {
        ResumableEnv::restore(&mut self.inner, snapshot)
    }
}

fn tiny() -> RefineConfig {
    let mut cfg = RefineConfig {
        num_envs: 8,
        rollout_steps: 16,
        iterations: 4,
        hidden: vec![16],
        ..Default::default()
    };
    cfg.ppo.num_minibatches = 2;
    cfg.ppo.critic_warmup_iters = 0;
    cfg
}

fn non_finite(r: deltaplan_learn::Result<impl Sized>) -> (String, String) {
    match r {
        Err(LearnError::NonFinite { what, at }) => (what, at),
        Err(e) => panic!("expected a non-finite error, got {e}"),
        Ok(_) => panic!("expected a non-finite error, got success"),
    }
}

fn refiner<'a>(
    planner: &'a Planner,
    cfg: RefineConfig,
    env: Broken,
) -> Refiner<'a, Planner, Broken> {
    Refiner::with_env(
        cfg,
        SimConfig::default(),
        TrainScenarios::default(),
        planner,
        3,
        env,
    )
    .unwrap()
}

fn broken(poison: Poison, at: usize) -> Broken {
    Broken {
        inner: TrainScenarios::default().batch_env(SimConfig::default(), 8, 3),
        poison,
        at,
        steps: 0,
    }
}

#[test]
fn a_simulators_nan_is_named_with_its_world_scenario_and_iteration() {
    let planner = Planner::new(usize::MAX);
    for (poison, what) in [
        (Poison::Observation, "observation of world 3 (scenario "),
        (Poison::Reward, "reward NaN of world 3 (scenario "),
    ] {
        // Step 20 is iteration 2's 4th step.
        let mut r = refiner(&planner, tiny(), broken(poison, 20));
        r.iterate().unwrap();
        let before = r.actor_critic().clone();
        let (w, at) = non_finite(r.iterate());
        assert!(w.starts_with(what) && w.contains(" seed "), "{w}");
        assert_eq!(at, "refinement iteration 2, rollout step 4");
        // Stopped before the update: the networks are iteration 1's.
        let same = before
            .named_tensors()
            .iter()
            .zip(r.actor_critic().named_tensors())
            .all(|(a, b)| a.data == b.data);
        assert!(same, "the update ran");
    }
}

#[test]
fn a_frozen_planners_nan_plan_is_named_before_it_is_driven() {
    // Iteration 1 makes 16 rollout calls and one bootstrap call (and one per truncation, rare
    // in 16 steps); from call 25 on, inside iteration 2's rollout, world 2's plan is NaN.
    let planner = Planner::new(25);
    let mut r = refiner(&planner, tiny(), broken(Poison::Reward, usize::MAX));
    let (w, at) = non_finite(r.iterate().and_then(|_| r.iterate()));
    assert!(
        w.starts_with("plan of the frozen planner for world 2 (scenario "),
        "{w}"
    );
    assert!(
        at.starts_with("refinement iteration 2, rollout step "),
        "{at}"
    );
}

#[test]
fn a_hopeless_loss_scale_is_named_at_the_first_minibatch() {
    let planner = Planner::new(usize::MAX);
    let cfg = RefineConfig {
        reward_scale: 1e30,
        ..tiny()
    };
    let mut r = refiner(&planner, cfg, broken(Poison::Reward, usize::MAX));
    let (w, at) = non_finite(r.iterate());
    assert!(w.starts_with("PPO loss term `"), "{w}");
    assert_eq!(at, "refinement iteration 1 (PPO epoch 1, minibatch 1)");
}

#[test]
fn no_checkpoint_holds_a_non_finite_weight_and_a_flipped_bit_is_refused() {
    let planner = Planner::new(usize::MAX);
    let mut r = refiner(&planner, tiny(), broken(Poison::Reward, usize::MAX));
    r.iterate().unwrap();
    let dir = std::env::temp_dir().join(format!("deltaplan-nonfinite-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("rl.safetensors");
    r.save(&path).unwrap();
    let good = std::fs::read(&path).unwrap();
    assert_eq!(load_policy(&path, &planner).unwrap().iteration, 1);
    // A NaN weight: the save is refused, naming the tensor; the old checkpoint stays.
    let w = r.actor_critic().named_tensors()[0].name.clone();
    let data = r.actor_critic().named_tensors()[0].data.to_vec();
    let shape = r.actor_critic().named_tensors()[0].shape.clone();
    let mut poisoned = r.actor_critic().clone();
    let mut bad = data.clone();
    bad[1] = f32::NAN;
    poisoned.set_tensor(&w, &shape, &bad).unwrap();
    let tensors: Vec<(String, Vec<usize>, &[f32])> = poisoned
        .named_tensors()
        .into_iter()
        .map(|t| (t.name, t.shape, t.data))
        .collect();
    let meta = serde_json::json!({"kind": "residual_policy", "schema_version": 2});
    let (what, at) = non_finite(deltaplan_learn::checkpoint::save_tensors(
        &path, &tensors, &meta,
    ));
    assert_eq!(what, format!("tensor `{w}` (1 of {} values)", data.len()));
    assert!(at.contains("nothing was written"), "{at}");
    assert_eq!(std::fs::read(&path).unwrap(), good);
    // One flipped bit anywhere in the payload: refused, naming the file.
    for offset in [good.len() - 3, good.len() / 2] {
        let mut flipped = good.clone();
        flipped[offset] ^= 0x10;
        std::fs::write(&path, &flipped).unwrap();
        match load_policy(&path, &planner) {
            Err(e @ LearnError::Corrupt { .. }) => {
                let m = e.to_string();
                assert!(m.contains("rl.safetensors") && m.contains("hash"), "{m}");
            }
            Err(e) => panic!("expected a corrupt-file error, got {e}"),
            Ok(_) => panic!("a flipped bit at {offset} was accepted"),
        }
    }
    std::fs::remove_dir_all(dir).ok();
}
