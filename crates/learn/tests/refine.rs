//! The refinement loop end to end: iteration-0 identity, frozen SFT, bit-exact resume,
//! checkpoint mismatches, and that refinement beats a deliberately imperfect SFT planner in
//! closed loop.

use deltaplan_learn::dataset::{record_demonstrations, DemoConfig, Recording};
use deltaplan_learn::refine::{load_policy, RefineConfig, Refiner, ResidualPlanner};
use deltaplan_learn::scenarios::TrainScenarios;
use deltaplan_learn::sft::{train_sft, SftPlanner, SftTrainConfig, SftWorkspace};
use deltaplan_learn::{FrozenPlanner, LearnError, PlannerError};
use deltaplan_sim::{Difficulty, Family, SimConfig, Split, OBS_DIM};
use std::path::PathBuf;

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "deltaplan-refine-test-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A small, quickly trained (imperfect) SFT planner on `families`.
fn small_sft(families: Vec<Family>, steps: usize, epochs: usize) -> SftPlanner {
    let demos = Recording {
        sim: SimConfig::default(),
        seed: 3,
        scenarios: TrainScenarios {
            families,
            ..Default::default()
        },
        demos: DemoConfig {
            n_envs: 32,
            steps,
            ..Default::default()
        },
    };
    let ds = record_demonstrations(&demos, |_| {}).unwrap();
    let cfg = SftTrainConfig {
        hidden: vec![64],
        z_dim: 32,
        head_hidden: vec![],
        epochs,
        patience: None,
        ..Default::default()
    };
    train_sft(&cfg, &ds, 0, |_| {}).unwrap().0
}

fn tiny_refine() -> RefineConfig {
    let mut cfg = RefineConfig {
        num_envs: 8,
        rollout_steps: 32,
        iterations: 4,
        hidden: vec![32, 32],
        ..Default::default()
    };
    cfg.ppo.num_minibatches = 4;
    cfg.ppo.critic_warmup_iters = 1;
    cfg
}

fn sft_plans(sft: &SftPlanner, obs: &[f32]) -> Vec<f32> {
    let b = obs.len() / OBS_DIM;
    let mut z = vec![0.0; b * sft.z_dim()];
    let mut wp = vec![0.0; b * sft.action_dim()];
    sft.forward(obs, &mut SftWorkspace::new(), &mut z, &mut wp)
        .unwrap();
    wp
}

fn some_observations(n: usize) -> Vec<f32> {
    let env = deltaplan_sim::BatchEnv::train(
        SimConfig::default(),
        n,
        5,
        Family::ALL.to_vec(),
        Difficulty::default(),
    );
    let mut obs = vec![0.0; n * OBS_DIM];
    env.observe(&mut obs);
    obs
}

#[test]
fn iteration_zero_is_the_sft_planner_and_sft_stays_frozen() {
    let sft = small_sft(vec![Family::Curvy], 60, 2);
    let before: Vec<Vec<f32>> = sft.named_tensors().iter().map(|t| t.2.to_vec()).collect();
    let hash = sft.weights_hash();
    let mut r = Refiner::new(
        tiny_refine(),
        SimConfig::default(),
        TrainScenarios::default(),
        &sft,
        1,
    )
    .unwrap();
    let obs = some_observations(16);
    let mut plans = vec![0.0; 16 * sft.action_dim()];
    ResidualPlanner::new(&sft, r.actor_critic(), 1.0)
        .plan(&obs, &mut plans)
        .unwrap();
    assert_eq!(
        plans,
        sft_plans(&sft, &obs),
        "iteration 0 must reproduce the SFT plans exactly"
    );
    for _ in 0..3 {
        r.iterate().unwrap();
    }
    // The actor has moved (after the critic warm-up) ...
    ResidualPlanner::new(&sft, r.actor_critic(), 1.0)
        .plan(&obs, &mut plans)
        .unwrap();
    assert_ne!(plans, sft_plans(&sft, &obs));
    // ... every correction is within the bound ...
    let base = sft_plans(&sft, &obs);
    let cfg = tiny_refine();
    for (k, (p, b)) in plans.iter().zip(&base).enumerate() {
        assert!((p - b).abs() <= cfg.max_delta[k % 2] + 1e-4);
    }
    // ... and the SFT planner is bit-identical.
    let after: Vec<Vec<f32>> = sft.named_tensors().iter().map(|t| t.2.to_vec()).collect();
    assert!(before == after && hash == sft.weights_hash());
}

#[test]
fn resume_reproduces_the_uninterrupted_run_bit_for_bit() {
    let sft = small_sft(vec![Family::Merge, Family::CutIn], 60, 2);
    let dir = tmpdir("resume");
    let path = dir.join("rl.safetensors");
    let mut straight = Refiner::new(
        tiny_refine(),
        SimConfig::default(),
        TrainScenarios::default(),
        &sft,
        7,
    )
    .unwrap();
    let mut stats_straight = Vec::new();
    for _ in 0..4 {
        stats_straight.push(serde_json::to_string(&straight.iterate().unwrap()).unwrap());
    }
    let mut first = Refiner::new(
        tiny_refine(),
        SimConfig::default(),
        TrainScenarios::default(),
        &sft,
        7,
    )
    .unwrap();
    first.iterate().unwrap();
    first.iterate().unwrap();
    first.save(&path).unwrap();
    drop(first);
    let mut resumed = Refiner::resume(&path, &sft).unwrap();
    assert_eq!(resumed.learner.iteration, 2);
    let mut stats_resumed = Vec::new();
    for _ in 0..2 {
        stats_resumed.push(serde_json::to_string(&resumed.iterate().unwrap()).unwrap());
    }
    let bits = |r: &Refiner| -> Vec<u32> {
        r.actor_critic()
            .named_tensors()
            .iter()
            .flat_map(|t| t.data.iter().map(|x| x.to_bits()))
            .chain(
                r.learner
                    .ppo
                    .optim
                    .groups
                    .iter()
                    .flat_map(|g| g.exp_avg_sq.iter().map(|x| x.to_bits())),
            )
            .collect()
    };
    assert!(
        bits(&straight) == bits(&resumed),
        "weights or optimiser state differ after resume"
    );
    // Everything but wall-clock speed matches too.
    let strip = |s: &str| s.split(",\"steps_per_second\"").next().unwrap().to_string();
    assert_eq!(strip(&stats_straight[2]), strip(&stats_resumed[0]));
    assert_eq!(strip(&stats_straight[3]), strip(&stats_resumed[1]));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn mismatched_or_damaged_checkpoints_say_what_is_wrong() {
    let sft = small_sft(vec![Family::Curvy], 40, 1);
    let other = small_sft(vec![Family::CutIn], 40, 1);
    let dir = tmpdir("mismatch");
    let path = dir.join("rl.safetensors");
    let mut r = Refiner::new(
        tiny_refine(),
        SimConfig::default(),
        TrainScenarios::default(),
        &sft,
        1,
    )
    .unwrap();
    r.iterate().unwrap();
    r.save(&path).unwrap();
    // Another SFT planner.
    let err = Refiner::resume(&path, &other)
        .err()
        .expect("other SFT must be refused")
        .to_string();
    assert!(err.contains("another SFT planner"), "{err}");
    let err = load_policy(&path, &other)
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("another SFT planner"), "{err}");
    // Truncated file.
    let bytes = std::fs::read(&path).unwrap();
    let cut = dir.join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let err = Refiner::resume(&cut, &sft)
        .err()
        .expect("truncated file must be refused")
        .to_string();
    assert!(err.contains("cut.safetensors"), "{err}");
    // An SFT checkpoint passed as a refinement checkpoint.
    let sft_path = dir.join("sft.safetensors");
    sft.save(&sft_path).unwrap();
    let err = load_policy(&sft_path, &sft)
        .err()
        .expect("wrong kind")
        .to_string();
    assert!(
        err.contains("sft_planner") || err.contains("SFT planner checkpoint"),
        "{err}"
    );
    // Other horizon: an SFT planner for H = 8 cannot drive a H = 10 simulator.
    let err = Refiner::new(
        tiny_refine(),
        SimConfig {
            horizon: 8,
            ..Default::default()
        },
        TrainScenarios::default(),
        &sft,
        1,
    )
    .err()
    .expect("horizon mismatch")
    .to_string();
    assert!(err.contains("waypoints"), "{err}");
    std::fs::remove_dir_all(dir).ok();
}

/// Closed-loop driving score of a planner on the eval suite of one family.
fn closed_loop_ds(
    sft: &SftPlanner,
    policy: Option<(&deltaplan_learn::ActorCritic, f32)>,
    family: Family,
    n: usize,
) -> (f32, f32) {
    let specs = Split::Eval.suite(&[family], n, Difficulty::default());
    let sim = SimConfig::default();
    let mut env = deltaplan_sim::BatchEnv::fixed(sim, specs);
    let mut buf = deltaplan_sim::StepBuffers::new(n);
    let mut obs = vec![0.0; n * OBS_DIM];
    let mut plans = vec![0.0; n * sim.action_dim()];
    env.observe(&mut obs);
    let mut rp = policy.map(|(ac, ramp)| ResidualPlanner::new(sft, ac, ramp));
    while !env.all_idle() {
        match rp.as_mut() {
            Some(rp) => rp.plan(&obs, &mut plans).unwrap(),
            None => plans.copy_from_slice(&sft_plans(sft, &obs)),
        }
        env.step(&plans, &mut buf);
        obs.copy_from_slice(&buf.obs);
    }
    let eps: Vec<_> = (0..n).map(|i| *env.finished(i)).collect();
    let ds = eps.iter().map(|e| e.driving_score()).sum::<f32>() / n as f32;
    let fail = eps
        .iter()
        .filter(|e| e.had_collision() || e.offroad > 0)
        .count() as f32
        / n as f32;
    (ds, fail)
}

#[test]
fn refinement_beats_an_imperfect_sft_planner_in_closed_loop() {
    // A deliberately weak SFT planner (few demonstrations, a short training) on the cut-in
    // family, where imitation collides with vehicles cutting in.
    let family = Family::CutIn;
    let sft = small_sft(vec![family], 150, 6);
    let mut cfg = RefineConfig {
        num_envs: 32,
        rollout_steps: 128,
        iterations: 80,
        hidden: vec![64, 64],
        ..Default::default()
    };
    cfg.ppo.num_minibatches = 4;
    cfg.ppo.learning_rate = 5e-4;
    let scenarios = TrainScenarios {
        families: vec![family],
        ..Default::default()
    };
    let mut r = Refiner::new(cfg, SimConfig::default(), scenarios, &sft, 11).unwrap();
    let mut curve = Vec::new();
    while !r.done() {
        curve.push(r.iterate().unwrap().episode_return);
    }
    let (ds_sft, fail_sft) = closed_loop_ds(&sft, None, family, 60);
    let ramp = r.ramp();
    let (ds_rl, fail_rl) = closed_loop_ds(&sft, Some((r.actor_critic(), ramp)), family, 60);
    println!("cut-in eval (60 scenarios): SFT DS {ds_sft:.1} fail {fail_sft:.2}; RL DS {ds_rl:.1} fail {fail_rl:.2}; returns {curve:?}");
    assert!(ds_rl >= ds_sft + 5.0, "refined DS {ds_rl} vs SFT {ds_sft}");
    assert!(
        fail_rl < fail_sft,
        "refined failures {fail_rl} vs SFT {fail_sft}"
    );
}

/// Waypoints straight ahead at `speed`, 0.2 s apart (the test planners' plan).
fn straight_ahead(speed: f32, plan: &mut [f32]) {
    for (j, wp) in plan.chunks_exact_mut(2).enumerate() {
        wp[0] = speed * 0.2 * (j + 1) as f32;
        wp[1] = 0.0;
    }
}

/// A planner from "another format": straight-ahead waypoints at a fixed speed, no embedding,
/// identity observation statistics; optionally failing.
struct ConstantPlanner {
    speed: f32,
    fail: bool,
    zeros: Vec<f32>,
    ones: Vec<f32>,
}

impl ConstantPlanner {
    fn new(speed: f32, fail: bool) -> Self {
        ConstantPlanner {
            speed,
            fail,
            zeros: vec![0.0; OBS_DIM],
            ones: vec![1.0; OBS_DIM],
        }
    }
}

impl FrozenPlanner for ConstantPlanner {
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
        plans_out: &mut [f32],
        embedding_out: &mut [f32],
    ) -> Result<(), PlannerError> {
        if self.fail {
            return Err(PlannerError::Failed("backend lost".into()));
        }
        assert!(embedding_out.is_empty());
        assert_eq!(plans_out.len(), obs.len() / OBS_DIM * 20);
        for plan in plans_out.chunks_exact_mut(20) {
            straight_ahead(self.speed, plan);
        }
        Ok(())
    }
    fn obs_normalisation(&self) -> (&[f32], &[f32]) {
        (&self.zeros, &self.ones)
    }
    fn weights_hash(&self) -> String {
        format!("constant-{}", self.speed)
    }
}

/// The refinement builds on any `FrozenPlanner`: its input is what the planner declares (no
/// embedding here), iteration 0 is that planner exactly, the checkpoint is tied to its hash,
/// and a planner failure surfaces as a typed error.
#[test]
fn refinement_stands_on_any_frozen_planner() {
    let planner = ConstantPlanner::new(8.0, false);
    assert_eq!(
        deltaplan_learn::refine::policy_input_dim(&planner),
        20 + OBS_DIM
    );
    let mut r = Refiner::new(
        tiny_refine(),
        SimConfig::default(),
        TrainScenarios::default(),
        &planner,
        3,
    )
    .unwrap();
    let obs = some_observations(4);
    let mut plans = vec![0.0; 4 * 20];
    ResidualPlanner::new(&planner, r.actor_critic(), 1.0)
        .plan(&obs, &mut plans)
        .unwrap();
    let mut want = vec![0.0; 4 * 20];
    planner
        .plan_batch(&obs, &mut (), &mut want, &mut [])
        .unwrap();
    assert_eq!(plans, want, "iteration 0 is the frozen planner");
    let s = r.iterate().unwrap();
    assert!(s.value_loss.is_finite() && s.env_steps == 8 * 32);
    let dir = tmpdir("constant");
    let path = dir.join("rl.safetensors");
    r.save(&path).unwrap();
    assert_eq!(load_policy(&path, &planner).unwrap().iteration, 1);
    let other = ConstantPlanner::new(9.0, false);
    assert!(
        load_policy(&path, &other).is_err(),
        "another planner's checkpoint"
    );
    std::fs::remove_dir_all(dir).ok();

    let broken = ConstantPlanner::new(8.0, true);
    let mut r = Refiner::new(
        tiny_refine(),
        SimConfig::default(),
        TrainScenarios::default(),
        &broken,
        3,
    )
    .unwrap();
    match r.iterate() {
        Err(LearnError::Planner(PlannerError::Failed(m))) => assert_eq!(m, "backend lost"),
        other => panic!(
            "expected a planner error, got {:?}",
            other.map(|s| s.iteration)
        ),
    }
}

/// A planner over a BEV raster: it slows down in proportion to the vehicle pixels ahead of the
/// ego (so its plans depend on the raster), and counts the rows whose raster shows the ego.
struct RasterPlanner {
    spec: deltaplan_sim::BevSpec,
    rows: std::sync::atomic::AtomicUsize,
    rows_with_ego: std::sync::atomic::AtomicUsize,
    zeros: Vec<f32>,
    ones: Vec<f32>,
}

impl FrozenPlanner for RasterPlanner {
    type Workspace = ();
    fn obs_dim(&self) -> usize {
        OBS_DIM + self.spec.len()
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
        plans_out: &mut [f32],
        _embedding_out: &mut [f32],
    ) -> Result<(), PlannerError> {
        use deltaplan_sim::bev::channel;
        use std::sync::atomic::Ordering::Relaxed;
        let plane = self.spec.plane();
        for (row, plan) in obs
            .chunks_exact(self.obs_dim())
            .zip(plans_out.chunks_exact_mut(20))
        {
            let raster = &row[OBS_DIM..];
            let ego = &raster[channel::EGO * plane..(channel::EGO + 1) * plane];
            let vehicles = &raster[channel::VEHICLES * plane..(channel::VEHICLES + 1) * plane];
            self.rows.fetch_add(1, Relaxed);
            if ego.contains(&1.0) {
                self.rows_with_ego.fetch_add(1, Relaxed);
            }
            let ahead = vehicles[..plane / 2].iter().sum::<f32>() / (plane / 2) as f32;
            straight_ahead(8.0 * (1.0 - 4.0 * ahead).max(0.0), plan);
        }
        Ok(())
    }
    fn obs_normalisation(&self) -> (&[f32], &[f32]) {
        (&self.zeros, &self.ones)
    }
    fn bev_observation(&self) -> Option<deltaplan_sim::BevSpec> {
        Some(self.spec)
    }
    fn residual_obs_dim(&self) -> usize {
        OBS_DIM
    }
    fn weights_hash(&self) -> String {
        "raster".into()
    }
}

/// A planner that reads a raster is refined in a batch whose observations carry it: every
/// row it is given shows the ego, the residual's input stays the vector's size, and a
/// checkpoint resumes bit for bit.
#[test]
fn refinement_feeds_a_raster_planner_its_raster() {
    use std::sync::atomic::Ordering::Relaxed;
    let planner = RasterPlanner {
        spec: deltaplan_sim::BevSpec {
            height: 24,
            width: 16,
            metres_per_pixel: 1.5,
            behind_m: 6.0,
        },
        rows: 0.into(),
        rows_with_ego: 0.into(),
        zeros: vec![0.0; OBS_DIM],
        ones: vec![1.0; OBS_DIM],
    };
    assert_eq!(
        deltaplan_learn::refine::policy_input_dim(&planner),
        20 + OBS_DIM
    );
    let new = || {
        Refiner::new(
            tiny_refine(),
            SimConfig::default(),
            TrainScenarios::default(),
            &planner,
            5,
        )
        .unwrap()
    };
    let mut a = new();
    a.iterate().unwrap();
    let dir = tmpdir("raster");
    let path = dir.join("rl.safetensors");
    a.save(&path).unwrap();
    let sa = a.iterate().unwrap();
    let (rows, with_ego) = (
        planner.rows.load(Relaxed),
        planner.rows_with_ego.load(Relaxed),
    );
    assert!(rows >= 2 * 8 * 32, "{rows} rows planned");
    assert_eq!(with_ego, rows, "every raster shows the ego");
    let mut b = Refiner::resume(&path, &planner).unwrap();
    let sb = b.iterate().unwrap();
    assert_eq!(sa.policy_loss.to_bits(), sb.policy_loss.to_bits());
    assert_eq!(sa.value_loss.to_bits(), sb.value_loss.to_bits());
    std::fs::remove_dir_all(dir).ok();
}

/// The rollout split across collectors of 3 and 5 worlds (as Ray actors hold them), put back
/// together and learned from, gives the single-process refinement's weights, optimiser state,
/// training curve and checkpoint file bit for bit.
#[test]
fn a_rollout_split_across_collectors_learns_the_same_bits() {
    use deltaplan_learn::refine::{planner_env, Learner};
    use deltaplan_learn::rollout::{Collector, RolloutPart};
    use deltaplan_sim::EnvSnapshot;
    let sft = small_sft(vec![Family::Merge, Family::CutIn], 60, 2);
    let dir = tmpdir("parts");
    let (sim, scenarios, seed) = (SimConfig::default(), TrainScenarios::default(), 9);
    let mut single = Refiner::new(tiny_refine(), sim, scenarios.clone(), &sft, seed).unwrap();
    let mut learner = Learner::new(tiny_refine(), sim, scenarios.clone(), &sft, seed).unwrap();
    let mut collectors: Vec<_> = [0..3, 3..8]
        .into_iter()
        .map(|w| {
            let first = w.start;
            let env = planner_env(&scenarios, sim, w, seed, &sft).unwrap();
            // As the single process does: the expert's labels when guidance is on (default).
            Collector::new(&sft, env, first).record_expert(tiny_refine().ppo.expert_guided())
        })
        .collect();
    let strip = |s: String| s.split(",\"steps_per_second\"").next().unwrap().to_string();
    let mut episodes = 0;
    let (t_len, n, a) = (32, 8, sft.action_dim());
    for _ in 0..3 {
        let expected = single.iterate().unwrap();
        episodes += expected.episodes;
        learner.draw_noise();
        let mut parts: Vec<RolloutPart> = collectors
            .iter_mut()
            .rev() // the order parts arrive in does not matter
            .map(|c| {
                let l = &learner;
                // This collector's worlds' rows of the learner's noise [T, N, A].
                let (first, k) = (c.first_world(), c.worlds());
                let noise: Vec<f32> = (0..t_len)
                    .flat_map(|t| l.noise()[(t * n + first) * a..(t * n + first + k) * a].to_vec())
                    .collect();
                let mut part = RolloutPart::default();
                c.collect(
                    &l.ppo.ac,
                    &noise,
                    l.iteration,
                    l.cfg.rollout_steps,
                    l.ramp(),
                    l.cfg.reward_scale,
                    &mut part,
                )
                .unwrap();
                part
            })
            .collect();
        let mut whole = RolloutPart::interleave(&mut parts).unwrap();
        let got = learner
            .learn(&mut whole, std::time::Instant::now())
            .unwrap();
        assert_eq!(
            strip(serde_json::to_string(&expected).unwrap()),
            strip(serde_json::to_string(&got).unwrap())
        );
    }
    assert!(episodes > 0, "the comparison must cover episode ends");
    let bits = |ac: &deltaplan_learn::ActorCritic| -> Vec<u32> {
        ac.named_tensors()
            .iter()
            .flat_map(|t| t.data.iter().map(|x| x.to_bits()))
            .collect()
    };
    assert!(
        bits(single.actor_critic()) == bits(&learner.ppo.ac),
        "weights differ"
    );
    // The checkpoint of the parts (snapshots and running returns joined in world order) is the
    // single process's file, byte for byte; a single process resumes from it.
    let (a, b) = (
        dir.join("single.safetensors"),
        dir.join("parts.safetensors"),
    );
    single.save(&a).unwrap();
    let snaps: Vec<EnvSnapshot> = collectors.iter().map(|c| c.env().snapshot()).collect();
    let joined = EnvSnapshot {
        seed,
        episodes: snaps.iter().flat_map(|s| s.episodes.clone()).collect(),
        histories: snaps.iter().flat_map(|s| s.histories.clone()).collect(),
    };
    let returns: Vec<f32> = collectors
        .iter()
        .flat_map(|c| c.running_return().to_vec())
        .collect();
    learner.save(&b, &joined, &returns).unwrap();
    assert!(
        std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
        "checkpoints differ"
    );
    assert_eq!(Refiner::resume(&b, &sft).unwrap().learner.iteration, 3);
    // Parts that leave a gap between their worlds are refused, naming the worlds.
    let mut gap = vec![
        RolloutPart {
            first_world: 0,
            worlds: 3,
            steps: 32,
            ..Default::default()
        },
        RolloutPart {
            first_world: 4,
            worlds: 4,
            steps: 32,
            ..Default::default()
        },
    ];
    let err = RolloutPart::interleave(&mut gap).unwrap_err().to_string();
    assert!(err.contains("worlds 4..8"), "{err}");
    std::fs::remove_dir_all(dir).ok();
}

/// An iteration in which no episode ended logs null episode means, and the line reads back (a
/// resume keeps it) with NaN there.
#[test]
fn a_metrics_line_without_episodes_reads_back() {
    use deltaplan_learn::refine::IterationStats;
    let s = IterationStats {
        iteration: 2,
        driving_score: f32::NAN,
        episode_return: f32::NAN,
        policy_loss: 0.25,
        ..Default::default()
    };
    let line = serde_json::to_string(&s).unwrap();
    assert!(line.contains("\"driving_score\":null"), "{line}");
    let back: IterationStats = serde_json::from_str(&line).unwrap();
    assert!(back.driving_score.is_nan() && back.episode_return.is_nan());
    assert_eq!((back.iteration, back.policy_loss), (2, 0.25));
}

#[test]
fn validation_picks_the_policy_that_checkpoints_hand_to_evaluation() {
    let sft = small_sft(vec![Family::Merge, Family::CutIn], 60, 2);
    let dir = tmpdir("selection");
    let path = dir.join("rl.safetensors");
    let cfg = RefineConfig {
        select_every: 2,
        select_after: 0.5,
        iterations: 6,
        ..tiny_refine()
    };
    let mut r = Refiner::new(
        cfg,
        SimConfig::default(),
        TrainScenarios::default(),
        &sft,
        7,
    )
    .unwrap();
    let weights = |r: &Refiner| -> Vec<Vec<f32>> {
        r.actor_critic()
            .named_tensors()
            .iter()
            .map(|t| t.data.to_vec())
            .collect()
    };
    // Validation at iterations 4 and 6 (every 2, from half way, and the last); the scores
    // stand in for the validation suite's, which the CLI drives.
    let mut validated = Vec::new();
    let mut at_4 = Vec::new();
    for (it, score) in (1..=6).zip([9.0, 9.0, 9.0, 50.0, 9.0, 40.0]) {
        r.iterate().unwrap();
        assert_eq!(r.learner.iteration, it);
        if r.learner.validates_now() {
            validated.push(it);
            r.learner.offer(score, 1.0);
        }
        if it == 4 {
            at_4 = weights(&r);
            // Saved mid-way, resumed: the selection survives the checkpoint.
            r.save(&path).unwrap();
            r = Refiner::resume(&path, &sft).unwrap();
            assert_eq!(
                r.learner.selection().map(|s| (s.iteration, s.score)),
                Some((4, 50.0))
            );
        }
    }
    assert_eq!(validated, [4, 6]);
    let sel = r.learner.selection().unwrap();
    assert_eq!(
        (sel.iteration, sel.score),
        (4, 50.0),
        "a lower score does not replace it"
    );
    r.save(&path).unwrap();
    let last = weights(&r);
    assert_ne!(at_4, last, "the last two iterations changed the policy");
    // Evaluation and export load the selected policy, not the last iteration's.
    let loaded = load_policy(&path, &sft).unwrap();
    assert_eq!(loaded.iteration, 6);
    assert_eq!(loaded.selected_iteration, Some(4));
    let got: Vec<Vec<f32>> = loaded
        .ac
        .named_tensors()
        .iter()
        .map(|t| t.data.to_vec())
        .collect();
    assert!(got == at_4, "load_policy returns the selected weights");
    // Validation off: the last iteration's policy.
    let cfg = RefineConfig {
        select_every: 0,
        ..tiny_refine()
    };
    let mut off = Refiner::new(
        cfg,
        SimConfig::default(),
        TrainScenarios::default(),
        &sft,
        7,
    )
    .unwrap();
    while !off.learner.done() {
        off.iterate().unwrap();
        assert!(!off.learner.validates_now());
    }
    off.save(&path).unwrap();
    assert_eq!(load_policy(&path, &sft).unwrap().selected_iteration, None);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn the_validation_suite_is_held_out_and_spans_the_training_difficulties() {
    let scenarios = TrainScenarios::default();
    let suite = scenarios.validation_suite(10);
    assert_eq!(suite.len(), 10 * scenarios.families.len());
    let (easiest, hardest) = scenarios
        .difficulty
        .training_range(scenarios.difficulty_mix);
    for (i, spec) in suite.iter().enumerate() {
        assert!(Split::Validation.contains(spec.seed));
        for split in [Split::Train, Split::Eval, Split::Hard] {
            assert!(!split.contains(spec.seed));
        }
        assert_eq!(spec.family, scenarios.families[i / 10]);
        // Evenly spread: the k-th of 10 sits (k + 0.5) / 10 of the way up the range.
        let k = (i % 10) as f32;
        assert_eq!(spec.difficulty, easiest.lerp(&hardest, (k + 0.5) / 10.0));
    }
    let first = &suite[0].difficulty;
    let last = &suite[9].difficulty;
    assert!(first.traffic_density < last.traffic_density || easiest == hardest);
}

/// With expert guidance on, every rollout step records the privileged expert's correction to
/// the frozen plan, `clamp((expert - sft) / (ramp * max_delta), -1, 1)`: a twin of the worlds,
/// driven with the plans the rollout executed (frozen plan + the correction its stored actions
/// imply), gives the same expert plans, step by step, across episode ends. Off, nothing is
/// recorded.
#[test]
fn the_rollout_records_the_experts_correction_at_every_step() {
    use deltaplan_learn::refine::{planner_env, Learner};
    use deltaplan_learn::rollout::{Collector, RolloutPart};
    use deltaplan_sim::batch::StepBuffers;
    let sft = small_sft(vec![Family::CutIn, Family::HardBrake], 60, 1);
    let (sim, seed, scenarios) = (SimConfig::default(), 6, TrainScenarios::default());
    let mut cfg = RefineConfig {
        num_envs: 4,
        rollout_steps: 300,
        ..tiny_refine()
    };
    cfg.ppo.expert_coef = 1.0;
    let (n, t_len, a) = (cfg.num_envs, cfg.rollout_steps, sft.action_dim());
    let mut learner = Learner::new(cfg.clone(), sim, scenarios.clone(), &sft, seed).unwrap();
    let env = planner_env(&scenarios, sim, 0..n, seed, &sft).unwrap();
    let mut c = Collector::new(&sft, env, 0).record_expert(true);
    learner.draw_noise();
    let mut part = RolloutPart::default();
    let l = &learner;
    let ramp = l.ramp();
    c.collect(&l.ppo.ac, l.noise(), 0, t_len, ramp, 1.0, &mut part)
        .unwrap();
    assert_eq!(part.expert.len(), t_len * n * a);
    let max_delta = &l.ppo.ac.max_delta;
    let mut twin = planner_env(&scenarios, sim, 0..n, seed, &sft).unwrap();
    let mut buf = StepBuffers::for_env(&twin);
    let mut obs = vec![0.0; n * OBS_DIM];
    let (mut expert, mut plan) = (vec![0.0; n * a], vec![0.0; n * a]);
    let (mut ends, mut clipped) = (0, 0);
    for t in 0..t_len {
        twin.observe(&mut obs);
        twin.expert_actions(&mut expert);
        let sft_plan = sft_plans(&sft, &obs);
        let rows = t * n * a..(t + 1) * n * a;
        for (k, (&c, (&e, &w))) in part.expert[rows.clone()]
            .iter()
            .zip(expert.iter().zip(&sft_plan))
            .enumerate()
        {
            let want = ((e - w) / (ramp * max_delta[k % a])).clamp(-1.0, 1.0);
            assert_eq!(c.to_bits(), want.to_bits(), "step {t}, float {k}");
            clipped += usize::from(want.abs() == 1.0);
        }
        // The executed plan: the frozen plan plus the squashed correction of the stored actions.
        deltaplan_learn::dist::squash(&part.u[rows.clone()], max_delta, &mut plan).unwrap();
        for (p, &w) in plan.iter_mut().zip(&sft_plan) {
            *p = w + ramp * *p;
        }
        twin.step(&plan, &mut buf);
        ends += buf
            .terminated
            .iter()
            .chain(&buf.truncated)
            .filter(|&&e| e)
            .count();
    }
    assert!(ends > 0, "the comparison must cross an episode end");
    assert!(clipped > 0 && clipped < part.expert.len() / 2, "{clipped}");
    // Off: nothing recorded, and the PPO update refuses a coefficient without corrections.
    let mut off = Collector::new(
        &sft,
        planner_env(&scenarios, sim, 0..n, seed, &sft).unwrap(),
        0,
    );
    off.collect(&l.ppo.ac, l.noise(), 0, t_len, ramp, 1.0, &mut part)
        .unwrap();
    assert!(part.expert.is_empty());
    let err = learner
        .learn(&mut part, std::time::Instant::now())
        .unwrap_err()
        .to_string();
    assert!(err.contains("expert_coef"), "{err}");
}

/// Expert guidance pulls the refined planner's plans towards the expert's: after a few
/// iterations with a large coefficient, on states the refinement never saw, the refined
/// planner's plans are closer to the expert's than the frozen planner's are.
#[test]
fn expert_guidance_moves_the_plans_towards_the_experts() {
    use deltaplan_sim::batch::StepBuffers;
    let sft = small_sft(vec![Family::HardBrake, Family::CutIn], 80, 1);
    let mut cfg = RefineConfig {
        num_envs: 16,
        rollout_steps: 64,
        iterations: 20,
        ..tiny_refine()
    };
    // Imitation alone, fast: a large coefficient and learning rate, no target-KL stop.
    cfg.ppo.expert_coef = 1000.0;
    cfg.ppo.critic_warmup_iters = 0;
    cfg.ppo.learning_rate = 3e-3;
    cfg.ppo.target_kl = None;
    let scenarios = TrainScenarios {
        families: vec![Family::HardBrake, Family::CutIn],
        ..Default::default()
    };
    let mut r = Refiner::new(cfg, SimConfig::default(), scenarios.clone(), &sft, 8).unwrap();
    while !r.done() {
        r.iterate().unwrap();
    }
    // Fresh states: other worlds (another seed) driven a while by the expert.
    let mut env = scenarios.batch_env(SimConfig::default(), 32, 99);
    let mut buf = StepBuffers::for_env(&env);
    let a = sft.action_dim();
    let mut expert = vec![0.0; 32 * a];
    for _ in 0..40 {
        env.expert_actions(&mut expert);
        env.step(&expert, &mut buf);
    }
    let mut obs = vec![0.0; 32 * OBS_DIM];
    env.observe(&mut obs);
    env.expert_actions(&mut expert);
    let frozen = sft_plans(&sft, &obs);
    let mut refined = vec![0.0; 32 * a];
    ResidualPlanner::new(&sft, r.actor_critic(), r.ramp())
        .plan(&obs, &mut refined)
        .unwrap();
    let dist = |p: &[f32]| -> f64 {
        p.iter()
            .zip(&expert)
            .map(|(x, e)| f64::from((x - e).abs()))
            .sum::<f64>()
    };
    let (before, after) = (dist(&frozen), dist(&refined));
    assert!(
        after < 0.8 * before,
        "L1 distance to the expert's plans: frozen {before:.1}, refined {after:.1}"
    );
}
