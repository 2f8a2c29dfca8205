//! RL refinement of a frozen SFT planner: a residual delta head trained with PPO + GAE in closed
//! loop. Read top to bottom, it is one training iteration:
//!
//! 1. Rollout: for `rollout_steps` steps of `num_envs` worlds, the frozen planner (the SFT
//!    planner, or any [`FrozenPlanner`]) maps each observation to an embedding `z` (if it has
//!    one) and waypoints `W_sft` (computed once per step and stored); the policy input
//!    `x = [z, W_sft / scale, normalised obs]` feeds the actor-critic, which samples the
//!    pre-squash action `u`; the world executes `W_sft + ramp * max_delta * tanh(u)`.
//! 2. Bootstrap values: `V(x')` of the next observation, or of the final observation of an
//!    episode that was truncated (route finished, time limit); none after a termination.
//! 3. GAE(gamma, lambda) over the `[T, N]` rollout ([`crate::gae()`]).
//! 4. PPO update ([`crate::ppo::Ppo::update`]): clipped surrogate, value loss, entropy, KL to the
//!    SFT policy with adaptive beta, critic warm-up, target-KL early stop.
//!
//! Everything is a pure function of the seed: the environment's scenarios, and the action noise
//! and minibatch shuffles (drawn from an RNG seeded by seed and iteration number). A checkpoint
//! taken between iterations holds the networks, the optimiser moments, the KL coefficient, the
//! counters, the training scenarios and the environment snapshot
//! (episode numbers plus the plans executed since each episode began), so a resumed run
//! continues bit for bit.

use std::path::Path;
use std::time::Instant;

use deltaplan_sim::batch::StepBuffers;
use deltaplan_sim::env::{ResumableEnv, VecEnv};
use deltaplan_sim::{BatchEnv, EnvSnapshot, SimConfig};
use deltaplan_stdx::seed;
use rand_pcg::Pcg64;
use serde::{Deserialize, Serialize};

use crate::actor_critic::{
    ActOutput, ActWorkspace, ActorCritic, ActorCriticConfig, DEFAULT_LOG_STD_INIT,
};
use crate::checkpoint::{load_tensors, save_tensors, take_tensor};
use crate::error::{LearnError, Result};
use crate::gae::GaeSteps;
use crate::phases::{PhaseClock, PhaseSeconds};
use crate::planner::FrozenPlanner;
use crate::ppo::{Ppo, PpoConfig, RolloutBatch};
use crate::scenarios::TrainScenarios;
use crate::sft::SftPlanner;

/// Kind and schema version of refinement checkpoints.
pub const CHECKPOINT_KIND: &str = "residual_policy";
/// Version 2: the training scenarios are stored apart from the refinement settings (`scenarios`),
/// and the PPO settings no longer hold the iteration count.
pub const CHECKPOINT_VERSION: u32 = 2;

/// Waypoints enter the policy input divided by these (x forward, y left), so they are O(1);
/// public because the ONNX export of the refined planner repeats the division.
pub const WAYPOINT_SCALE: [f32; 2] = [20.0, 5.0];

/// Refinement settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RefineConfig {
    /// Worlds stepped together.
    pub num_envs: usize,
    /// Steps per world per iteration (rollout length T).
    pub rollout_steps: usize,
    /// Number of PPO iterations.
    pub iterations: usize,
    pub gamma: f32,
    pub gae_lambda: f32,
    /// Rewards are multiplied by this before GAE (keeps value targets O(1)).
    pub reward_scale: f32,
    /// Hidden widths of the delta head and the value head.
    pub hidden: Vec<usize>,
    /// Bound on the executed correction per waypoint coordinate, metres: (x, y).
    pub max_delta: [f32; 2],
    /// Initial log-std of the pre-squash action.
    pub log_std_init: f32,
    /// Progressive residual: the correction is scaled by min(1, (iteration + 1) / ramp_iters);
    /// 0 disables the ramp.
    pub ramp_iters: usize,
    /// PPO update settings; the learning rate anneals over `iterations`.
    pub ppo: PpoConfig,
}

impl Default for RefineConfig {
    fn default() -> Self {
        RefineConfig {
            num_envs: 128,
            rollout_steps: 128,
            iterations: 400,
            gamma: 0.99,
            gae_lambda: 0.95,
            reward_scale: 0.1,
            hidden: vec![128, 128],
            max_delta: [4.0, 1.0],
            log_std_init: DEFAULT_LOG_STD_INIT,
            ramp_iters: 0,
            ppo: PpoConfig::default(),
        }
    }
}

impl RefineConfig {
    /// Rejects settings that cannot work, naming the field (`refine.<field>`).
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(LearnError::Config(format!("refine.{m}")));
        for (field, value) in [
            ("num_envs", self.num_envs),
            ("rollout_steps", self.rollout_steps),
            ("iterations", self.iterations),
        ] {
            if value == 0 {
                return bad(format!("{field} must be at least 1"));
            }
        }
        if self.hidden.is_empty() || self.hidden.contains(&0) {
            return bad(format!(
                "hidden = {:?}: needs at least one layer, every width at least 1",
                self.hidden
            ));
        }
        for (field, value) in [("gamma", self.gamma), ("gae_lambda", self.gae_lambda)] {
            if !(0.0..=1.0).contains(&value) {
                return bad(format!("{field} = {value} must be in [0, 1]"));
            }
        }
        if self.max_delta.iter().any(|&m| !(m > 0.0 && m <= 20.0)) {
            return bad(format!(
                "max_delta = {:?} must be in (0, 20] metres",
                self.max_delta
            ));
        }
        if !(self.reward_scale > 0.0 && self.reward_scale.is_finite()) {
            return bad(format!(
                "reward_scale = {} must be positive and finite",
                self.reward_scale
            ));
        }
        if !(-20.0..=2.0).contains(&self.log_std_init) {
            return bad(format!(
                "log_std_init = {} must be in [-20, 2]",
                self.log_std_init
            ));
        }
        self.ppo.validate().map_err(|e| match e {
            LearnError::Config(m) => LearnError::Config(format!("refine.{m}")),
            other => other,
        })?;
        let rollout = self.num_envs.saturating_mul(self.rollout_steps);
        let needed = self.ppo.num_minibatches * self.ppo.min_minibatch_len();
        if rollout < needed {
            return bad(format!(
                "num_envs * rollout_steps = {rollout} samples is smaller than \
                 refine.ppo.num_minibatches = {} minibatches of at least {} samples",
                self.ppo.num_minibatches,
                self.ppo.min_minibatch_len()
            ));
        }
        Ok(())
    }
}

/// Width of the policy input on top of `planner`: its embedding, its plan, the observation.
pub fn policy_input_dim(planner: &impl FrozenPlanner) -> usize {
    planner.embedding_dim() + planner.action_dim() + planner.residual_obs_dim()
}

/// Writes the policy input `x = [z, W / scale, normalised obs]` for a batch: the planner's
/// embedding `z` and plan `W`, the observation's first `residual_obs_dim` features normalised
/// with the planner's statistics.
fn build_policy_input(
    planner: &impl FrozenPlanner,
    z: &[f32],
    wp: &[f32],
    obs: &[f32],
    x: &mut [f32],
) {
    let (z_dim, a, od) = (
        planner.embedding_dim(),
        planner.action_dim(),
        planner.obs_dim(),
    );
    let (mean, std) = planner.obs_normalisation();
    let d = policy_input_dim(planner);
    for (i, row) in x.chunks_exact_mut(d).enumerate() {
        row[..z_dim].copy_from_slice(&z[i * z_dim..(i + 1) * z_dim]);
        for (k, (o, w)) in row[z_dim..z_dim + a]
            .iter_mut()
            .zip(&wp[i * a..(i + 1) * a])
            .enumerate()
        {
            *o = w / WAYPOINT_SCALE[k % 2];
        }
        for (k, o) in row[z_dim + a..].iter_mut().enumerate() {
            *o = (obs[i * od + k] - mean[k]) / std[k];
        }
    }
}

/// The built-in simulator's training batch, observed the way `planner` reads (with its raster,
/// if it reads one).
fn planner_env(
    scenarios: &TrainScenarios,
    sim: SimConfig,
    n: usize,
    seed: u64,
    planner: &impl FrozenPlanner,
) -> Result<BatchEnv> {
    let env = scenarios.batch_env(sim, n, seed);
    match planner.bev_observation() {
        Some(spec) => env
            .with_bev_observation(spec)
            .map_err(|e| LearnError::Config(format!("the frozen planner's raster: {e}"))),
        None => Ok(env),
    }
}

/// Shape of the residual actor-critic for `cfg` on top of `planner`.
fn actor_critic_config(cfg: &RefineConfig, planner: &impl FrozenPlanner) -> ActorCriticConfig {
    let a = planner.action_dim();
    let mut ac = ActorCriticConfig::new(policy_input_dim(planner), a, &cfg.hidden, 1.0);
    ac.log_std_init = cfg.log_std_init;
    ac.max_delta = (0..a).map(|k| cfg.max_delta[k % 2]).collect();
    ac
}

/// Refuses a checkpoint whose settings would build networks or an environment larger than
/// what the file holds (a damaged or hostile file must not make the loader allocate without
/// bound): the parameters its `hidden` implies must be among its tensors, and its world count
/// must match its stored episode counters when `worlds` is given.
fn check_checkpoint_sizes(
    meta: &crate::checkpoint::Metadata,
    cfg: &RefineConfig,
    planner: &impl FrozenPlanner,
    tensors: &crate::checkpoint::TensorMap,
    worlds: Option<usize>,
) -> Result<()> {
    cfg.validate()
        .map_err(|e| meta.incompatible(format!("its settings are invalid: {e}")))?;
    let held: usize = tensors.values().map(|(_, d)| d.len()).sum();
    let (d, a) = (policy_input_dim(planner), planner.action_dim());
    let mut implied = Some(a);
    for out in [a, 1] {
        let mut fan_in = d;
        for &w in cfg.hidden.iter().chain([&out]) {
            implied = implied.and_then(|n| {
                fan_in
                    .checked_mul(w)
                    .and_then(|x| x.checked_add(w))
                    .and_then(|x| n.checked_add(x))
            });
            fan_in = w;
        }
    }
    if implied.is_none_or(|n| n > held) {
        return Err(meta.incompatible(format!(
            "its settings (hidden = {:?}) imply more parameters than its {held} stored values",
            cfg.hidden
        )));
    }
    if let Some(n) = worlds.filter(|&n| n != cfg.num_envs) {
        return Err(meta.incompatible(format!(
            "it stores {n} worlds' episode counters but num_envs = {}",
            cfg.num_envs
        )));
    }
    Ok(())
}

/// A trained residual policy read back from a refinement checkpoint.
pub struct LoadedPolicy {
    pub ac: ActorCritic,
    /// Correction scale at the saved iteration.
    pub ramp: f32,
    pub iteration: usize,
    pub iterations: usize,
    pub env_steps: u64,
}

/// Loads the residual actor-critic from `path`, checking it was trained on `planner`.
pub fn load_policy(path: &Path, planner: &impl FrozenPlanner) -> Result<LoadedPolicy> {
    let (meta, mut tensors) = load_tensors(path, CHECKPOINT_KIND, CHECKPOINT_VERSION)?;
    check_sft_hash(
        &path.display().to_string(),
        &meta.field::<String>("sft_hash")?,
        planner,
    )?;
    let cfg: RefineConfig = meta.field("config")?;
    check_checkpoint_sizes(&meta, &cfg, planner, &tensors, None)?;
    let iteration: usize = meta.field("iteration")?;
    let env_steps: u64 = meta.field("env_steps")?;
    // Every weight is overwritten from the file; the seed only fills the shapes.
    let mut ac = ActorCritic::new(&actor_critic_config(&cfg, planner), &mut seed::rng(0, 0))?;
    load_actor_critic(&mut ac, &mut tensors, path)?;
    let ramp = if cfg.ramp_iters == 0 {
        1.0
    } else {
        (iteration as f32 / cfg.ramp_iters as f32).min(1.0)
    };
    Ok(LoadedPolicy {
        ac,
        ramp,
        iteration,
        iterations: cfg.iterations,
        env_steps,
    })
}

/// Overwrites every tensor of `ac` from a checkpoint's tensors, checking names and shapes.
fn load_actor_critic(
    ac: &mut ActorCritic,
    tensors: &mut crate::checkpoint::TensorMap,
    path: &Path,
) -> Result<()> {
    let names: Vec<(String, Vec<usize>)> = ac
        .named_tensors()
        .into_iter()
        .map(|t| (t.name, t.shape))
        .collect();
    for (name, shape) in names {
        let data = take_tensor(tensors, path, CHECKPOINT_KIND, &name, &shape)?;
        ac.set_tensor(&name, &shape, &data)?;
    }
    Ok(())
}

fn check_sft_hash(shown: &str, hash: &str, planner: &impl FrozenPlanner) -> Result<()> {
    let mine = planner.weights_hash();
    if hash != mine {
        return Err(LearnError::Checkpoint(format!(
            "{shown} was trained on another SFT planner (weights hash {}..., this one is {}...): \
             pass the SFT checkpoint it was trained with, or start a new refinement",
            &hash[..12.min(hash.len())],
            &mine[..12.min(mine.len())]
        )));
    }
    Ok(())
}

/// The refined planner: frozen SFT planner plus the residual actor (and its critic).
pub struct ResidualPlanner<'a, P: FrozenPlanner = SftPlanner> {
    /// The frozen planner the residual corrects.
    pub planner: &'a P,
    pub ac: &'a ActorCritic,
    /// Scale on the correction (the progressive ramp's value).
    pub ramp: f32,
    planner_ws: P::Workspace,
    act_ws: ActWorkspace,
    bufs: Buffers,
}

/// Reusable per-batch buffers of the planner pipeline.
#[derive(Default)]
struct Buffers {
    z: Vec<f32>,
    wp: Vec<f32>,
    x: Vec<f32>,
    u: Vec<f32>,
    delta: Vec<f32>,
    logp: Vec<f32>,
    value: Vec<f32>,
}

impl Buffers {
    /// Sizes every buffer for a batch of `b` observations of `planner`.
    fn resize(&mut self, b: usize, planner: &impl FrozenPlanner) {
        let (z_dim, a, d) = (
            planner.embedding_dim(),
            planner.action_dim(),
            policy_input_dim(planner),
        );
        self.z.resize(b * z_dim, 0.0);
        self.wp.resize(b * a, 0.0);
        self.x.resize(b * d, 0.0);
        self.u.resize(b * a, 0.0);
        self.delta.resize(b * a, 0.0);
        self.logp.resize(b, 0.0);
        self.value.resize(b, 0.0);
    }
}

impl<'a, P: FrozenPlanner> ResidualPlanner<'a, P> {
    pub fn new(planner: &'a P, ac: &'a ActorCritic, ramp: f32) -> Self {
        ResidualPlanner {
            planner,
            ac,
            ramp,
            planner_ws: P::Workspace::default(),
            act_ws: ActWorkspace::new(),
            bufs: Buffers::default(),
        }
    }

    /// Deterministic plans for a batch of observations: `W_sft + ramp * max_delta * tanh(mu)`.
    pub fn plan(&mut self, obs: &[f32], out: &mut [f32]) -> Result<()> {
        let b = obs.len() / self.planner.obs_dim().max(1);
        self.bufs.resize(b, self.planner);
        let bf = &mut self.bufs;
        self.planner
            .plan_batch(obs, &mut self.planner_ws, &mut bf.wp, &mut bf.z)?;
        build_policy_input(self.planner, &bf.z, &bf.wp, obs, &mut bf.x);
        self.ac.act_deterministic(
            &bf.x,
            &mut self.act_ws,
            ActOutput {
                u: &mut bf.u,
                delta: &mut bf.delta,
                logp: &mut bf.logp,
                value: &mut bf.value,
            },
        )?;
        for ((o, w), d) in out.iter_mut().zip(&bf.wp).zip(&bf.delta) {
            *o = w + self.ramp * d;
        }
        Ok(())
    }
}

/// What one iteration measured.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct IterationStats {
    pub iteration: usize,
    pub env_steps: u64,
    /// Episodes that ended during this iteration's rollout.
    pub episodes: usize,
    /// Mean undiscounted (unscaled) return of those episodes.
    pub episode_return: f32,
    pub driving_score: f32,
    pub route_completion: f32,
    pub collision_rate: f32,
    pub offroad_rate: f32,
    pub policy_loss: f32,
    pub value_loss: f32,
    pub entropy: f32,
    pub approx_kl: f32,
    pub kl_sft: f32,
    pub kl_sft_coef: f32,
    pub clip_frac: f32,
    pub explained_variance: f32,
    pub learning_rate: f64,
    /// Mean |executed correction| per coordinate, metres.
    pub residual_magnitude: f32,
    pub ramp: f32,
    pub early_stopped: bool,
    pub actor_frozen: bool,
    /// Environment steps per wall-clock second over the whole iteration (update included).
    pub steps_per_second: f32,
    /// Where the iteration's time went.
    #[serde(default)]
    pub seconds: PhaseSeconds,
}

/// The PPO refinement loop with its environment, buffers and state.
///
/// Generic over the frozen planner `P` and the environment `E` (the two seams): the built-in
/// SFT planner in the built-in simulator by default; another simulator enters through
/// [`Refiner::with_env`].
pub struct Refiner<'a, P: FrozenPlanner = SftPlanner, E: ResumableEnv = BatchEnv> {
    pub cfg: RefineConfig,
    pub sim: SimConfig,
    /// Scenario distribution of the training worlds.
    pub scenarios: TrainScenarios,
    pub seed: u64,
    planner: &'a P,
    pub ppo: Ppo,
    env: E,
    rng: Pcg64,
    pub iteration: usize,
    pub env_steps: u64,
    // Per-step buffers.
    obs: Vec<f32>,
    step: StepBuffers,
    plan: Vec<f32>,
    bufs: Buffers,
    planner_ws: P::Workspace,
    act_ws: ActWorkspace,
    // Rollout storage, time-major [T, N, ...].
    roll: RolloutBatch,
    rewards: Vec<f32>,
    terminated: Vec<bool>,
    truncated: Vec<bool>,
    next_values: Vec<f32>,
    running_return: Vec<f32>,
    // Bootstrap on truncation: gathered final observations.
    final_rows: Vec<usize>,
    final_obs: Vec<f32>,
    final_bufs: Buffers,
}

impl<'a, P: FrozenPlanner> Refiner<'a, P> {
    /// A fresh refinement of `planner` in `num_envs` training worlds of the built-in simulator
    /// (`sim`) drawing `scenarios`.
    pub fn new(
        cfg: RefineConfig,
        sim: SimConfig,
        scenarios: TrainScenarios,
        planner: &'a P,
        seed: u64,
    ) -> Result<Self> {
        let env = planner_env(&scenarios, sim, cfg.num_envs, seed, planner)?;
        Refiner::with_env(cfg, sim, scenarios, planner, seed, env)
    }

    /// Resumes from a checkpoint written by [`Refiner::save`] for this SFT planner. The run then
    /// continues exactly as if it had never stopped.
    pub fn resume(path: &Path, planner: &'a P) -> Result<Self> {
        let (meta, tensors) = load_tensors(path, CHECKPOINT_KIND, CHECKPOINT_VERSION)?;
        let cfg: RefineConfig = meta.field("config")?;
        let sim: SimConfig = meta.field("sim")?;
        let scenarios: TrainScenarios = meta.field("scenarios")?;
        let seed: u64 = meta.field("seed")?;
        let worlds = meta.field::<Vec<u64>>("env_episodes")?.len();
        check_checkpoint_sizes(&meta, &cfg, planner, &tensors, Some(worlds))?;
        sim.validate()
            .map_err(|e| meta.incompatible(format!("its [sim] is invalid: {e}")))?;
        scenarios
            .validate()
            .map_err(|e| meta.incompatible(format!("its scenarios are invalid: {e}")))?;
        let env = planner_env(&scenarios, sim, cfg.num_envs, seed, planner)?;
        Refiner::resume_loaded(path, (meta, tensors), planner, env)
    }
}

impl<'a, P: FrozenPlanner, E: ResumableEnv> Refiner<'a, P, E> {
    /// A fresh refinement of `planner` in `env`, a batch of `cfg.num_envs` training worlds that
    /// reset themselves (the environment seam). `sim` and `scenarios` describe the worlds; they
    /// are stored in checkpoints.
    pub fn with_env(
        cfg: RefineConfig,
        sim: SimConfig,
        scenarios: TrainScenarios,
        planner: &'a P,
        seed: u64,
        env: E,
    ) -> Result<Self> {
        cfg.validate()?;
        scenarios.validate()?;
        if env.num_envs() != cfg.num_envs {
            return Err(LearnError::Config(format!(
                "the environment has {} worlds but refine.num_envs is {}",
                env.num_envs(),
                cfg.num_envs
            )));
        }
        if planner.obs_dim() != env.obs_dim() {
            return Err(LearnError::Config(format!(
                "the frozen planner takes {} observation features, the simulator produces {}",
                planner.obs_dim(),
                env.obs_dim()
            )));
        }
        if planner.action_dim() != env.action_dim() {
            return Err(LearnError::Config(format!(
                "the SFT planner predicts {} waypoints but the simulator is configured for {}: \
                 retrain the SFT planner with sim.horizon = {}",
                planner.action_dim() / 2,
                env.action_dim() / 2,
                planner.action_dim() / 2
            )));
        }
        let mut rng = seed::rng(seed, 0);
        let a = planner.action_dim();
        let obs_dim = env.obs_dim();
        let ac = ActorCritic::new(&actor_critic_config(&cfg, planner), &mut rng)?;
        let ppo = Ppo::new(cfg.ppo.clone(), ac, cfg.iterations)?;
        let n = cfg.num_envs;
        let mut r = Refiner {
            sim,
            scenarios,
            seed,
            planner,
            ppo,
            rng,
            iteration: 0,
            env_steps: 0,
            obs: vec![0.0; n * obs_dim],
            step: StepBuffers::for_env(&env),
            plan: vec![0.0; n * a],
            bufs: Buffers::default(),
            planner_ws: P::Workspace::default(),
            act_ws: ActWorkspace::new(),
            roll: Default::default(),
            rewards: Vec::new(),
            terminated: Vec::new(),
            truncated: Vec::new(),
            next_values: Vec::new(),
            running_return: vec![0.0; n],
            final_rows: Vec::with_capacity(n),
            final_obs: Vec::with_capacity(n * obs_dim),
            final_bufs: Buffers::default(),
            env,
            cfg,
        };
        r.env.observe(&mut r.obs);
        Ok(r)
    }

    /// The residual actor-critic being trained.
    pub fn actor_critic(&self) -> &ActorCritic {
        &self.ppo.ac
    }

    /// Scale on the correction at the current iteration.
    pub fn ramp(&self) -> f32 {
        if self.cfg.ramp_iters == 0 {
            1.0
        } else {
            ((self.iteration + 1) as f32 / self.cfg.ramp_iters as f32).min(1.0)
        }
    }

    /// Whether every configured iteration has run.
    pub fn done(&self) -> bool {
        self.iteration >= self.cfg.iterations
    }

    /// SFT forward + policy input for `obs` into `bufs` (sized for its batch).
    fn policy_input(
        planner: &P,
        ws: &mut P::Workspace,
        obs: &[f32],
        bufs: &mut Buffers,
    ) -> Result<()> {
        bufs.resize(obs.len() / planner.obs_dim(), planner);
        planner.plan_batch(obs, ws, &mut bufs.wp, &mut bufs.z)?;
        build_policy_input(planner, &bufs.z, &bufs.wp, obs, &mut bufs.x);
        Ok(())
    }

    /// One iteration: rollout, GAE, PPO update.
    pub fn iterate(&mut self) -> Result<IterationStats> {
        self.rng = iteration_rng(self.seed, self.iteration);
        let started = Instant::now();
        let mut clock = PhaseClock::start();
        let (n, t_len) = (self.cfg.num_envs, self.cfg.rollout_steps);
        let a = self.planner.action_dim();
        let d = policy_input_dim(self.planner);
        let ramp = self.ramp();
        let total = n * t_len;
        self.roll.obs.resize(total * d, 0.0);
        self.roll.u.resize(total * a, 0.0);
        self.roll.logp.resize(total, 0.0);
        self.roll.values.resize(total, 0.0);
        self.roll.advantages.resize(total, 0.0);
        self.roll.returns.resize(total, 0.0);
        self.rewards.resize(total, 0.0);
        self.terminated.resize(total, false);
        self.truncated.resize(total, false);
        self.next_values.resize(total, 0.0);

        let mut ended = EpisodeTally::default();
        let mut residual_sum = 0.0f64;
        let iteration = self.iteration + 1;
        for t in 0..t_len {
            let (rows, r1) = (t * n, (t + 1) * n);
            // 1. Frozen SFT once per step; its outputs are stored as part of the policy input.
            Self::policy_input(
                self.planner,
                &mut self.planner_ws,
                &self.obs,
                &mut self.bufs,
            )?;
            let at = move || format!("refinement iteration {iteration}, rollout step {}", t + 1);
            if let Some(i) = first_bad_row(&self.bufs.wp, a) {
                return Err(LearnError::NonFinite {
                    what: format!("plan of the frozen planner for {}", self.env.world_label(i)),
                    at: at(),
                });
            }
            let bf = &mut self.bufs;
            self.roll.obs[rows * d..r1 * d].copy_from_slice(&bf.x);
            clock.lap(|s| &mut s.planner_forward);
            self.ppo.ac.sample(
                &bf.x,
                &mut self.rng,
                &mut self.act_ws,
                ActOutput {
                    u: &mut self.roll.u[rows * a..r1 * a],
                    delta: &mut bf.delta,
                    logp: &mut self.roll.logp[rows..r1],
                    value: &mut self.roll.values[rows..r1],
                },
            )?;
            for ((p, w), dl) in self.plan.iter_mut().zip(&bf.wp).zip(&bf.delta) {
                *p = w + ramp * dl;
                residual_sum += f64::from((ramp * dl).abs());
            }
            clock.lap(|s| &mut s.policy_forward);
            self.env.step(&self.plan, &mut self.step);
            if deltaplan_stdx::fault::inject_nan(|| "refine:reward".into()) {
                self.step.reward[0] = f32::NAN;
            }
            check_step(&self.env, &self.step, at)?;
            self.env_steps += n as u64;
            self.obs.copy_from_slice(&self.step.obs);

            // 2. Rewards, flags, bookkeeping of finished episodes.
            self.final_rows.clear();
            for i in 0..n {
                let r = self.step.reward[i];
                self.rewards[rows + i] = r * self.cfg.reward_scale;
                self.terminated[rows + i] = self.step.terminated[i];
                self.truncated[rows + i] = self.step.truncated[i];
                self.running_return[i] += r;
                if self.step.terminated[i] || self.step.truncated[i] {
                    ended.add(self.env.finished(i), self.running_return[i]);
                    self.running_return[i] = 0.0;
                    if self.step.truncated[i] {
                        self.final_rows.push(i);
                    }
                }
            }
            clock.lap(|s| &mut s.env);
            // Bootstrap values of truncated episodes' final observations.
            if !self.final_rows.is_empty() {
                self.final_obs.clear();
                for &i in &self.final_rows {
                    let od = self.planner.obs_dim();
                    self.final_obs
                        .extend_from_slice(&self.step.final_obs[i * od..(i + 1) * od]);
                }
                Self::policy_input(
                    self.planner,
                    &mut self.planner_ws,
                    &self.final_obs,
                    &mut self.final_bufs,
                )?;
                clock.lap(|s| &mut s.planner_forward);
                let fb = &mut self.final_bufs;
                self.ppo.ac.value(&fb.x, &mut self.act_ws, &mut fb.value)?;
                for (k, &i) in self.final_rows.iter().enumerate() {
                    self.next_values[rows + i] = fb.value[k];
                }
                clock.lap(|s| &mut s.policy_forward);
            }
        }
        // V of the observation after the last step.
        Self::policy_input(
            self.planner,
            &mut self.planner_ws,
            &self.obs,
            &mut self.bufs,
        )?;
        clock.lap(|s| &mut s.planner_forward);
        let bf = &mut self.bufs;
        self.ppo.ac.value(&bf.x, &mut self.act_ws, &mut bf.value)?;
        clock.lap(|s| &mut s.policy_forward);
        for t in 0..t_len {
            for i in 0..n {
                let k = t * n + i;
                if self.truncated[k] {
                    continue; // already V(final observation)
                }
                self.next_values[k] = if self.terminated[k] {
                    0.0
                } else if t + 1 < t_len {
                    self.roll.values[k + n]
                } else {
                    bf.value[i]
                };
            }
        }

        // 3. GAE.
        crate::gae(
            GaeSteps {
                rewards: &self.rewards,
                values: &self.roll.values,
                next_values: &self.next_values,
                terminated: &self.terminated,
                truncated: &self.truncated,
                num_envs: n,
            },
            self.cfg.gamma,
            self.cfg.gae_lambda,
            &mut self.roll.advantages,
            &mut self.roll.returns,
        )?;

        clock.lap(|s| &mut s.gae);

        // 4. PPO update.
        let up = self.ppo.update(&self.roll, &mut self.rng)?;
        clock.lap(|s| &mut s.update);
        self.iteration += 1;
        let l = up.losses;
        let e = ended.mean();
        Ok(IterationStats {
            iteration: self.iteration,
            env_steps: self.env_steps,
            episodes: ended.count,
            episode_return: e.episode_return,
            driving_score: e.driving_score,
            route_completion: e.route_completion,
            collision_rate: e.collision_rate,
            offroad_rate: e.offroad_rate,
            policy_loss: l.pg_loss,
            value_loss: l.v_loss,
            entropy: l.entropy,
            approx_kl: l.approx_kl,
            kl_sft: l.kl_sft,
            kl_sft_coef: up.kl_sft_coef,
            clip_frac: l.clip_frac,
            explained_variance: up.explained_variance,
            learning_rate: up.learning_rate,
            residual_magnitude: (residual_sum / (total * a) as f64) as f32,
            ramp,
            early_stopped: up.early_stopped,
            actor_frozen: up.actor_frozen,
            steps_per_second: total as f32 / started.elapsed().as_secs_f32(),
            seconds: clock.seconds,
        })
    }

    /// Writes a checkpoint atomically (see the module docs for what it holds).
    pub fn save(&self, path: &Path) -> Result<()> {
        let ac = &self.ppo.ac;
        let mut tensors: Vec<(String, Vec<usize>, &[f32])> = ac
            .named_tensors()
            .into_iter()
            .map(|t| (t.name, t.shape, t.data))
            .collect();
        for (g, group) in self.ppo.optim.groups.iter().enumerate() {
            let len = group.exp_avg.len();
            tensors.push((format!("optim.{g}.exp_avg"), vec![len], &group.exp_avg));
            tensors.push((
                format!("optim.{g}.exp_avg_sq"),
                vec![len],
                &group.exp_avg_sq,
            ));
        }
        let snap = self.env.snapshot();
        for (i, h) in snap.histories.iter().enumerate() {
            tensors.push((format!("env.history.{i}"), vec![h.len()], h));
        }
        let meta = serde_json::json!({
            "kind": CHECKPOINT_KIND,
            "schema_version": CHECKPOINT_VERSION,
            "sft_hash": self.planner.weights_hash(),
            "config": self.cfg,
            "sim": self.sim,
            "scenarios": self.scenarios,
            "seed": self.seed,
            "iteration": self.iteration,
            "env_steps": self.env_steps,
            "kl_sft_coef": self.ppo.kl_sft_coef,
            "ppo_iteration": self.ppo.iteration,
            "optim_steps": self.ppo.optim.groups.iter().map(|g| g.step).collect::<Vec<_>>(),
            "env_episodes": snap.episodes,
            "running_return": self.running_return,
            "obs_dim": self.planner.obs_dim(),
            "horizon": self.sim.horizon,
        });
        save_tensors(path, &tensors, &meta)
    }

    /// Resumes from a checkpoint written by [`Refiner::save`] for this planner, in `env` built
    /// the same way as the checkpointed one. The run then continues exactly as if it had never
    /// stopped.
    pub fn resume_with_env(path: &Path, planner: &'a P, env: E) -> Result<Self> {
        let loaded = load_tensors(path, CHECKPOINT_KIND, CHECKPOINT_VERSION)?;
        Refiner::resume_loaded(path, loaded, planner, env)
    }

    /// Resumes from a checkpoint already read from `path` (metadata and tensors), so the file
    /// is read once.
    fn resume_loaded(
        path: &Path,
        (meta, mut tensors): (crate::checkpoint::Metadata, crate::checkpoint::TensorMap),
        planner: &'a P,
        env: E,
    ) -> Result<Self> {
        let shown = path.display().to_string();
        let sft_hash: String = meta.field("sft_hash")?;
        check_sft_hash(&shown, &sft_hash, planner)?;
        let horizon: usize = meta.field("horizon")?;
        if horizon * 2 != planner.action_dim() {
            return Err(LearnError::Checkpoint(format!(
                "{shown} plans {horizon} waypoints but the SFT planner plans {}",
                planner.action_dim() / 2
            )));
        }
        let cfg: RefineConfig = meta.field("config")?;
        let sim: SimConfig = meta.field("sim")?;
        let scenarios: TrainScenarios = meta.field("scenarios")?;
        let seed: u64 = meta.field("seed")?;
        let worlds = meta.field::<Vec<u64>>("env_episodes")?.len();
        check_checkpoint_sizes(&meta, &cfg, planner, &tensors, Some(worlds))?;
        let mut r = Refiner::with_env(cfg, sim, scenarios, planner, seed, env)?;
        load_actor_critic(&mut r.ppo.ac, &mut tensors, path)?;
        let steps: Vec<u64> = meta.field("optim_steps")?;
        for (g, group) in r.ppo.optim.groups.iter_mut().enumerate() {
            let len = group.exp_avg.len();
            group.exp_avg = take_tensor(
                &mut tensors,
                path,
                CHECKPOINT_KIND,
                &format!("optim.{g}.exp_avg"),
                &[len],
            )?;
            group.exp_avg_sq = take_tensor(
                &mut tensors,
                path,
                CHECKPOINT_KIND,
                &format!("optim.{g}.exp_avg_sq"),
                &[len],
            )?;
            group.step = *steps.get(g).ok_or_else(|| {
                LearnError::Checkpoint(format!("{shown}: optimiser step counts are incomplete"))
            })?;
        }
        let episodes: Vec<u64> = meta.field("env_episodes")?;
        let mut histories = Vec::with_capacity(episodes.len());
        for i in 0..episodes.len() {
            let name = format!("env.history.{i}");
            let (_, data) = tensors
                .remove(&name)
                .ok_or_else(|| LearnError::MissingTensor {
                    path: shown.clone(),
                    name,
                    fix: "start a new refinement".into(),
                })?;
            histories.push(data);
        }
        r.env
            .restore(&EnvSnapshot {
                seed,
                episodes,
                histories,
            })
            .map_err(|e| LearnError::Checkpoint(format!("{shown}: {e}")))?;
        r.env.observe(&mut r.obs);
        r.rng = iteration_rng(seed, r.iteration);
        r.iteration = meta.field("iteration")?;
        r.env_steps = meta.field("env_steps")?;
        r.ppo.kl_sft_coef = meta.field("kl_sft_coef")?;
        r.ppo.iteration = meta.field("ppo_iteration")?;
        r.running_return = meta.field("running_return")?;
        Ok(r)
    }
}

/// The first row of `[rows, width]` `xs` holding a non-finite value.
fn first_bad_row(xs: &[f32], width: usize) -> Option<usize> {
    xs.chunks_exact(width.max(1))
        .position(|r| r.iter().any(|x| !x.is_finite()))
}

/// Refuses a step whose observations (current or final) or rewards are not finite, naming the
/// world and its scenario: training stops before such a number reaches an update.
fn check_step(env: &impl VecEnv, step: &StepBuffers, at: impl Fn() -> String) -> Result<()> {
    let od = env.obs_dim();
    let bad = |what: String, i: usize| {
        Err(LearnError::NonFinite {
            what: format!("{what} of {}", env.world_label(i)),
            at: at(),
        })
    };
    if let Some(i) = first_bad_row(&step.obs, od) {
        return bad("observation".into(), i);
    }
    for i in 0..env.num_envs() {
        if !step.reward[i].is_finite() {
            return bad(format!("reward {}", step.reward[i]), i);
        }
        if step.truncated[i]
            && step.final_obs[i * od..(i + 1) * od]
                .iter()
                .any(|x| !x.is_finite())
        {
            return bad("final observation".into(), i);
        }
    }
    Ok(())
}

/// The RNG of one iteration (action noise, minibatch shuffles): a function of the seed and the
/// iteration number, so a checkpoint needs no RNG state to resume exactly.
fn iteration_rng(seed: u64, iteration: usize) -> Pcg64 {
    seed::rng(
        seed,
        (iteration as u64 + 1).wrapping_mul(seed::GOLDEN_GAMMA),
    )
}

/// Sums over episodes that ended during a rollout, in f64 and in the order they ended.
#[derive(Default)]
struct EpisodeTally {
    count: usize,
    episode_return: f64,
    driving_score: f64,
    route_completion: f64,
    collisions: f64,
    offroads: f64,
}

/// Means of an [`EpisodeTally`] (NaN when no episode ended).
struct EpisodeMeans {
    episode_return: f32,
    driving_score: f32,
    route_completion: f32,
    collision_rate: f32,
    offroad_rate: f32,
}

impl EpisodeTally {
    fn add(&mut self, s: &deltaplan_sim::EpisodeStats, ret: f32) {
        self.count += 1;
        self.episode_return += f64::from(ret);
        self.driving_score += f64::from(s.driving_score());
        self.route_completion += f64::from(s.route_completion);
        self.collisions += f64::from(u8::from(s.had_collision()));
        self.offroads += f64::from(u8::from(s.offroad > 0));
    }

    fn mean(&self) -> EpisodeMeans {
        let mean = |sum: f64| {
            if self.count == 0 {
                f32::NAN
            } else {
                (sum / self.count as f64) as f32
            }
        };
        EpisodeMeans {
            episode_return: mean(self.episode_return),
            driving_score: mean(self.driving_score),
            route_completion: mean(self.route_completion),
            collision_rate: mean(self.collisions),
            offroad_rate: mean(self.offroads),
        }
    }
}
