//! RL refinement of a frozen SFT planner: a residual delta head trained with PPO + GAE in closed
//! loop. One training iteration (steps 1-2 in [`crate::rollout`], 3-4 in [`Learner::learn`]):
//!
//! 1. Rollout: for `rollout_steps` steps of `num_envs` worlds, the frozen planner (the SFT
//!    planner, or any [`FrozenPlanner`]) maps each observation to an embedding `z` (if it has
//!    one) and waypoints `W_sft` (computed once per step and stored); the policy input
//!    `x = [z, W_sft / scale, normalised obs]` feeds the actor-critic, which samples the
//!    pre-squash action `u`; the world executes `W_sft + ramp * max_delta * tanh(u)`. With
//!    expert guidance on (`ppo.expert_coef`), the privileged expert's plan `W_exp` of the same
//!    state is recorded as the target correction `clamp((W_exp - W_sft) / (ramp * max_delta),
//!    -1, 1)` (DAgger's labels: the states the policy visits, the expert's answers).
//! 2. Bootstrap values: `V(x')` of the next observation, or of the final observation of an
//!    episode that was truncated (route finished, time limit); none after a termination.
//! 3. GAE(gamma, lambda) over the `[T, N]` rollout ([`crate::gae()`]).
//! 4. PPO update ([`crate::ppo::Ppo::update`]): clipped surrogate, value loss, entropy, KL to the
//!    SFT policy with adaptive beta, expert guidance, critic warm-up, target-KL early stop.
//!
//! Everything is a pure function of the seed: the environment's scenarios, and the action noise
//! and minibatch shuffles (drawn by the learner from an RNG seeded by seed and iteration number,
//! the noise for every world before the rollout). So the rollout can be split across processes
//! by world ([`RolloutPart::interleave`]) without changing a bit of the result. A checkpoint
//! taken between iterations holds the networks, the optimiser moments, the KL coefficient, the
//! counters, the training scenarios and the environment snapshot
//! (episode numbers plus the plans executed since each episode began), so a resumed run
//! continues bit for bit.

use std::path::Path;
use std::time::Instant;

use deltaplan_sim::env::{ExpertEnv, ResumableEnv, VecEnv};
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
use crate::policy_input::Buffers;
pub use crate::policy_input::{policy_input_dim, WAYPOINT_SCALE};
use crate::ppo::{Ppo, PpoConfig, RolloutBatch};
use crate::rollout::{Collector, EndedEpisode, RolloutPart};
use crate::scenarios::TrainScenarios;
use crate::sft::SftPlanner;

/// Kind and schema version of refinement checkpoints.
pub const CHECKPOINT_KIND: &str = "residual_policy";
/// Version 2: the training scenarios are stored apart from the refinement settings (`scenarios`),
/// and the PPO settings no longer hold the iteration count.
pub const CHECKPOINT_VERSION: u32 = 2;

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
    /// Discount per step. Default 0.995: a horizon of about 20 s at `sim.dt` = 0.1 s, long
    /// enough to span a merge or a wait at a light; 0.99 (10 s) kept more failures (README,
    /// "How the defaults were chosen").
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
    /// Validation picks the refined planner: every this many iterations from `select_after`
    /// of the way through (and at the last), the refined planner drives the validation suite
    /// ([`TrainScenarios::validation_suite`]) and the best mean driving score so far is the
    /// policy that checkpoints hand to evaluation and export. 0: the last iteration's policy.
    pub select_every: usize,
    /// Fraction of `iterations` after which validation starts, in [0, 1].
    pub select_after: f32,
    /// Scenarios per family in the validation suite.
    pub validation_per_family: usize,
    /// PPO update settings; the learning rate anneals over `iterations`.
    pub ppo: PpoConfig,
}

impl Default for RefineConfig {
    fn default() -> Self {
        RefineConfig {
            num_envs: 128,
            rollout_steps: 128,
            iterations: 400,
            gamma: 0.995,
            gae_lambda: 0.95,
            reward_scale: 0.1,
            hidden: vec![128, 128],
            max_delta: [4.0, 1.0],
            log_std_init: DEFAULT_LOG_STD_INIT,
            ramp_iters: 0,
            select_every: 0,
            select_after: 0.5,
            validation_per_family: 100,
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
        if !(0.0..=1.0).contains(&self.select_after) {
            return bad(format!(
                "select_after = {} must be in [0, 1] (a fraction of iterations)",
                self.select_after
            ));
        }
        if self.select_every > 0 && self.validation_per_family == 0 {
            return bad(
                "validation_per_family must be at least 1 while select_every is on (0 turns \
                 validation off)"
                    .into(),
            );
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

/// Worlds `worlds` of the built-in simulator's training batch, observed the way `planner` reads
/// (with its raster, if it reads one).
pub fn planner_env(
    scenarios: &TrainScenarios,
    sim: SimConfig,
    worlds: std::ops::Range<usize>,
    seed: u64,
    planner: &impl FrozenPlanner,
) -> Result<BatchEnv> {
    let env = scenarios.batch_env_part(sim, worlds, seed);
    match planner.bev_observation() {
        Some(spec) => env
            .with_bev_observation(spec)
            .map_err(|e| LearnError::Config(format!("the frozen planner's raster: {e}"))),
        None => Ok(env),
    }
}

/// Shape of the residual actor-critic for `cfg` on top of `planner`.
pub(crate) fn actor_critic_config(
    cfg: &RefineConfig,
    planner: &impl FrozenPlanner,
) -> ActorCriticConfig {
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
    /// The iteration validation picked the policy from (`None`: the saved iteration's own).
    pub selected_iteration: Option<usize>,
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
    load_actor_critic(&mut ac, &mut tensors, path, CHECKPOINT_KIND)?;
    let mut ramp = policy_ramp(&cfg, iteration);
    let selected = read_selection(&meta, &mut tensors, &ac, path)?;
    if let Some(sel) = &selected {
        let names: Vec<(String, Vec<usize>)> = ac
            .named_tensors()
            .into_iter()
            .map(|t| (t.name, t.shape))
            .collect();
        for ((name, shape), data) in names.iter().zip(&sel.tensors) {
            ac.set_tensor(name, shape, data)?;
        }
        ramp = sel.ramp;
    }
    Ok(LoadedPolicy {
        ac,
        ramp,
        iteration,
        iterations: cfg.iterations,
        env_steps,
        selected_iteration: selected.map(|s| s.iteration),
    })
}

/// The correction scale of the policy saved after `iteration` iterations (the scale its last
/// rollout used).
fn policy_ramp(cfg: &RefineConfig, iteration: usize) -> f32 {
    if cfg.ramp_iters == 0 {
        1.0
    } else {
        (iteration as f32 / cfg.ramp_iters as f32).min(1.0)
    }
}

/// Prefix of the selected policy's tensors in a checkpoint.
const SELECTED: &str = "selected.";

/// The selection a checkpoint stores (`selected` in its metadata, its tensors under
/// [`SELECTED`]), shaped like `ac`; `None` when it stores none.
fn read_selection(
    meta: &crate::checkpoint::Metadata,
    tensors: &mut crate::checkpoint::TensorMap,
    ac: &ActorCritic,
    path: &Path,
) -> Result<Option<Selection>> {
    #[derive(Deserialize)]
    struct Selected {
        iteration: usize,
        score: f32,
        ramp: f32,
    }
    let Some(sel) = meta.optional::<Selected>("selected")? else {
        return Ok(None);
    };
    let mut out = Vec::new();
    for t in ac.named_tensors() {
        out.push(take_tensor(
            tensors,
            path,
            CHECKPOINT_KIND,
            &format!("{SELECTED}{}", t.name),
            &t.shape,
        )?);
    }
    Ok(Some(Selection {
        iteration: sel.iteration,
        score: sel.score,
        ramp: sel.ramp,
        tensors: out,
    }))
}

/// Overwrites every tensor of `ac` from the tensors of a file or message of `kind` read from
/// `path` (named in errors), checking names and shapes.
pub(crate) fn load_actor_critic(
    ac: &mut ActorCritic,
    tensors: &mut crate::checkpoint::TensorMap,
    path: &Path,
    kind: &str,
) -> Result<()> {
    let names: Vec<(String, Vec<usize>)> = ac
        .named_tensors()
        .into_iter()
        .map(|t| (t.name, t.shape))
        .collect();
    for (name, shape) in names {
        let data = take_tensor(tensors, path, kind, &name, &shape)?;
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
        self.bufs.fill(self.planner, &mut self.planner_ws, obs)?;
        let bf = &mut self.bufs;
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
    /// Mean undiscounted (unscaled) return of those episodes. This and the four means below are
    /// NaN when no episode ended (JSON writes null, read back as NaN).
    #[serde(deserialize_with = "nan_if_null")]
    pub episode_return: f32,
    #[serde(deserialize_with = "nan_if_null")]
    pub driving_score: f32,
    #[serde(deserialize_with = "nan_if_null")]
    pub route_completion: f32,
    #[serde(deserialize_with = "nan_if_null")]
    pub collision_rate: f32,
    #[serde(deserialize_with = "nan_if_null")]
    pub offroad_rate: f32,
    pub policy_loss: f32,
    pub value_loss: f32,
    pub entropy: f32,
    pub approx_kl: f32,
    pub kl_sft: f32,
    pub kl_sft_coef: f32,
    pub clip_frac: f32,
    /// Mean expert-guidance loss of the update, when `ppo.expert_coef` is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expert_loss: Option<f32>,
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
    /// Mean driving score of the refined planner on the validation suite, at the iterations
    /// that validate ([`Learner::validates_now`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_driving_score: Option<f32>,
}

/// The PPO refinement loop: a [`Collector`] over the training worlds and the [`Learner`] that
/// updates the policy from what it collects, in one process.
///
/// Generic over the frozen planner `P` and the environment `E` (the two seams): the built-in
/// SFT planner in the built-in simulator by default; another simulator enters through
/// [`Refiner::with_env`].
pub struct Refiner<'a, P: FrozenPlanner = SftPlanner, E: ResumableEnv + ExpertEnv = BatchEnv> {
    /// Settings, PPO state and counters.
    pub learner: Learner,
    collector: Collector<'a, P, E>,
    part: RolloutPart,
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
        let env = planner_env(&scenarios, sim, 0..cfg.num_envs, seed, planner)?;
        Refiner::with_env(cfg, sim, scenarios, planner, seed, env)
    }

    /// Resumes from a checkpoint written by [`Refiner::save`] for this SFT planner. The run then
    /// continues exactly as if it had never stopped.
    pub fn resume(path: &Path, planner: &'a P) -> Result<Self> {
        let (learner, snap, running_return) = Learner::resume(path, planner)?;
        let l = &learner;
        let env = planner_env(&l.scenarios, l.sim, 0..l.cfg.num_envs, l.seed, planner)?;
        Refiner::from_learner(learner, planner, env, Some((&snap, &running_return)))
    }
}

impl<'a, P: FrozenPlanner, E: ResumableEnv + ExpertEnv> Refiner<'a, P, E> {
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
        let learner = Learner::new(cfg, sim, scenarios, planner, seed)?;
        Refiner::from_learner(learner, planner, env, None)
    }

    /// A refinement that goes on from `learner` (fresh, or read by [`Learner::resume`] with the
    /// worlds' `state`: their snapshot and running returns) in `env`.
    pub fn from_learner(
        learner: Learner,
        planner: &'a P,
        mut env: E,
        state: Option<(&EnvSnapshot, &[f32])>,
    ) -> Result<Self> {
        check_env_fits(&env, learner.cfg.num_envs, planner)?;
        if let Some((snap, _)) = state {
            env.restore(snap).map_err(|e| {
                LearnError::Checkpoint(format!("the training worlds' snapshot: {e}"))
            })?;
        }
        let mut collector =
            Collector::new(planner, env, 0).record_expert(learner.cfg.ppo.expert_guided());
        if let Some((_, running_return)) = state {
            collector.set_running_return(running_return)?;
        }
        Ok(Refiner {
            learner,
            collector,
            part: RolloutPart::default(),
        })
    }

    /// Resumes from a checkpoint written by [`Refiner::save`] for this planner, in `env` built
    /// the same way as the checkpointed one. The run then continues exactly as if it had never
    /// stopped.
    pub fn resume_with_env(path: &Path, planner: &'a P, env: E) -> Result<Self> {
        let (learner, snap, running_return) = Learner::resume(path, planner)?;
        Refiner::from_learner(learner, planner, env, Some((&snap, &running_return)))
    }

    /// The residual actor-critic being trained.
    pub fn actor_critic(&self) -> &ActorCritic {
        &self.learner.ppo.ac
    }

    /// Scale on the correction at the current iteration.
    pub fn ramp(&self) -> f32 {
        self.learner.ramp()
    }

    /// Whether every configured iteration has run.
    pub fn done(&self) -> bool {
        self.learner.done()
    }

    /// One iteration: rollout, GAE, PPO update.
    pub fn iterate(&mut self) -> Result<IterationStats> {
        let started = Instant::now();
        self.learner.draw_noise();
        let l = &self.learner;
        self.collector.collect(
            &l.ppo.ac,
            l.noise(),
            l.iteration,
            l.cfg.rollout_steps,
            l.ramp(),
            l.cfg.reward_scale,
            &mut self.part,
        )?;
        self.learner.learn(&mut self.part, started)
    }

    /// Writes a checkpoint atomically (see the module docs for what it holds).
    pub fn save(&self, path: &Path) -> Result<()> {
        let c = &self.collector;
        self.learner
            .save(path, &c.env().snapshot(), c.running_return())
    }
}

/// A refinement the pipeline can drive: one process ([`Refiner`]), or a learner whose rollouts
/// workers elsewhere collect (`DistributedRefiner`, in the `distributed` module).
pub trait Refinement {
    /// Settings, PPO state and counters.
    fn learner(&self) -> &Learner;
    /// The same, to offer the policy for selection ([`Learner::offer`]).
    fn learner_mut(&mut self) -> &mut Learner;
    /// One iteration: rollout, GAE, PPO update.
    fn iterate(&mut self) -> Result<IterationStats>;
    /// Writes a checkpoint atomically; either kind of refinement resumes from it.
    fn save(&mut self, path: &Path) -> Result<()>;
}

impl<P: FrozenPlanner, E: ResumableEnv + ExpertEnv> Refinement for Refiner<'_, P, E> {
    fn learner(&self) -> &Learner {
        &self.learner
    }

    fn learner_mut(&mut self) -> &mut Learner {
        &mut self.learner
    }

    fn iterate(&mut self) -> Result<IterationStats> {
        Refiner::iterate(self)
    }

    fn save(&mut self, path: &Path) -> Result<()> {
        Refiner::save(self, path)
    }
}

/// A mean that JSON wrote as null (NaN: no episode ended) read back as NaN.
fn nan_if_null<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<f32, D::Error> {
    Ok(Option::<f32>::deserialize(d)?.unwrap_or(f32::NAN))
}

/// Refuses an environment that does not fit the refinement: its world count, or the frozen
/// planner's observation and plan widths.
pub fn check_env_fits(
    env: &impl VecEnv,
    worlds: usize,
    planner: &impl FrozenPlanner,
) -> Result<()> {
    if env.num_envs() != worlds {
        return Err(LearnError::Config(format!(
            "the environment has {} worlds but {worlds} were expected (refine.num_envs, or the \
             worker's share of them)",
            env.num_envs(),
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
    Ok(())
}

/// The learning half of refinement (steps 3-4): GAE and the PPO update on the rollout of all the
/// training worlds, whether one process collected it or several ([`RolloutPart::interleave`]).
/// Holds the settings, the PPO state and the counters a checkpoint stores.
pub struct Learner {
    pub cfg: RefineConfig,
    pub sim: SimConfig,
    /// Scenario distribution of the training worlds.
    pub scenarios: TrainScenarios,
    pub seed: u64,
    pub ppo: Ppo,
    pub iteration: usize,
    pub env_steps: u64,
    /// The frozen planner's weights hash and observation width, stored in checkpoints.
    sft_hash: String,
    obs_dim: usize,
    roll: RolloutBatch,
    /// The iteration's stream, after [`Learner::draw_noise`] drew the action noise from it.
    rng: Option<Pcg64>,
    noise: Vec<f32>,
    selection: Option<Selection>,
}

/// The policy validation picked so far: the actor-critic of the iteration whose refined planner
/// drove the validation suite best.
#[derive(Clone, Debug, PartialEq)]
pub struct Selection {
    pub iteration: usize,
    /// Mean driving score on the validation suite.
    pub score: f32,
    /// The correction scale it was validated with.
    pub ramp: f32,
    /// Its tensors, in [`ActorCritic::named_tensors`] order.
    tensors: Vec<Vec<f32>>,
}

impl Learner {
    /// A fresh learner for a refinement of `planner`; the policy's initial weights come from
    /// `seed` alone.
    pub fn new(
        cfg: RefineConfig,
        sim: SimConfig,
        scenarios: TrainScenarios,
        planner: &impl FrozenPlanner,
        seed: u64,
    ) -> Result<Self> {
        cfg.validate()?;
        scenarios.validate()?;
        let ac = ActorCritic::new(&actor_critic_config(&cfg, planner), &mut seed::rng(seed, 0))?;
        let ppo = Ppo::new(cfg.ppo.clone(), ac, cfg.iterations)?;
        Ok(Learner {
            sim,
            scenarios,
            seed,
            ppo,
            iteration: 0,
            env_steps: 0,
            sft_hash: planner.weights_hash(),
            obs_dim: planner.obs_dim(),
            roll: RolloutBatch::default(),
            rng: None,
            noise: Vec::new(),
            selection: None,
            cfg,
        })
    }

    /// Whether the refined planner of the iteration just completed should drive the validation
    /// suite ([`RefineConfig::select_every`]): every `select_every` iterations from
    /// `select_after` of the way through, and at the last.
    pub fn validates_now(&self) -> bool {
        let every = self.cfg.select_every;
        every > 0
            && self.iteration > 0
            && (self.done()
                || (self.iteration.is_multiple_of(every)
                    && self.iteration as f32 >= self.cfg.select_after * self.cfg.iterations as f32))
    }

    /// Offers the current policy, whose refined planner scored `score` on the validation suite
    /// with correction scale `ramp`; it becomes the selection if it beats the one so far (ties
    /// keep the earlier).
    pub fn offer(&mut self, score: f32, ramp: f32) {
        if self.selection.as_ref().is_some_and(|s| s.score >= score) {
            return;
        }
        self.selection = Some(Selection {
            iteration: self.iteration,
            score,
            ramp,
            tensors: self
                .ppo
                .ac
                .named_tensors()
                .into_iter()
                .map(|t| t.data.to_vec())
                .collect(),
        });
    }

    /// The policy validation picked so far (`None` before the first validation, or with
    /// validation off).
    pub fn selection(&self) -> Option<&Selection> {
        self.selection.as_ref()
    }

    /// Hash of the frozen planner's weights.
    pub fn sft_hash(&self) -> &str {
        &self.sft_hash
    }

    /// Scale on the correction at the current iteration.
    pub fn ramp(&self) -> f32 {
        if self.cfg.ramp_iters == 0 {
            1.0
        } else {
            ((self.iteration + 1) as f32 / self.cfg.ramp_iters as f32).min(1.0)
        }
    }

    /// Scale on the correction of the policy as it stands (the one a checkpoint saved now
    /// hands to evaluation, absent a selection).
    pub fn policy_ramp(&self) -> f32 {
        policy_ramp(&self.cfg, self.iteration)
    }

    /// Whether every configured iteration has run.
    pub fn done(&self) -> bool {
        self.iteration >= self.cfg.iterations
    }

    /// Starts an iteration: draws every world's standard normal action noise for the rollout,
    /// `[T, N, A]` time-major ([`Learner::noise`]), from the iteration's stream, which then
    /// shuffles the minibatches in [`Learner::learn`].
    pub fn draw_noise(&mut self) {
        let mut rng = iteration_rng(self.seed, self.iteration);
        let a = self.ppo.ac.act_dim();
        self.noise
            .resize(self.cfg.rollout_steps * self.cfg.num_envs * a, 0.0);
        crate::dist::standard_normal(&mut rng, &mut self.noise);
        self.rng = Some(rng);
    }

    /// The action noise of the iteration [`Learner::draw_noise`] started.
    pub fn noise(&self) -> &[f32] {
        &self.noise
    }

    /// Steps 3-4 on the rollout of every world (`part`, whose buffers are borrowed and given
    /// back): GAE, then the PPO update. `started` is when the iteration began (for its rate).
    pub fn learn(&mut self, part: &mut RolloutPart, started: Instant) -> Result<IterationStats> {
        let (n, t_len) = (self.cfg.num_envs, self.cfg.rollout_steps);
        if part.first_world != 0 || part.worlds != n || part.steps != t_len {
            return Err(LearnError::Config(format!(
                "the rollout covers worlds {}..{} for {} steps, the refinement needs worlds 0..{n} \
                 for {t_len} steps",
                part.first_world,
                part.first_world + part.worlds,
                part.steps
            )));
        }
        let mut rng = self.rng.take().ok_or_else(|| {
            LearnError::Config(
                "learn before draw_noise: an iteration starts by drawing its noise".into(),
            )
        })?;
        let mut clock = PhaseClock::start();
        let total = n * t_len;
        let roll = &mut self.roll;
        std::mem::swap(&mut roll.obs, &mut part.x);
        std::mem::swap(&mut roll.u, &mut part.u);
        std::mem::swap(&mut roll.logp, &mut part.logp);
        std::mem::swap(&mut roll.values, &mut part.values);
        std::mem::swap(&mut roll.expert, &mut part.expert);
        roll.advantages.resize(total, 0.0);
        roll.returns.resize(total, 0.0);

        // 3. GAE.
        let gae = crate::gae(
            GaeSteps {
                rewards: &part.rewards,
                values: &roll.values,
                next_values: &part.next_values,
                terminated: &part.terminated,
                truncated: &part.truncated,
                num_envs: n,
            },
            self.cfg.gamma,
            self.cfg.gae_lambda,
            &mut roll.advantages,
            &mut roll.returns,
        );
        clock.lap(|s| &mut s.gae);

        // 4. PPO update (minibatch shuffles from the iteration's stream).
        let up = gae.and_then(|()| self.ppo.update(&self.roll, &mut rng));
        let roll = &mut self.roll;
        std::mem::swap(&mut roll.obs, &mut part.x);
        std::mem::swap(&mut roll.u, &mut part.u);
        std::mem::swap(&mut roll.logp, &mut part.logp);
        std::mem::swap(&mut roll.values, &mut part.values);
        std::mem::swap(&mut roll.expert, &mut part.expert);
        let up = up?;
        clock.lap(|s| &mut s.update);
        let ramp = self.ramp();
        self.iteration += 1;
        self.env_steps += total as u64;
        let mut ended = EpisodeTally::default();
        for e in &part.ended {
            ended.add(e);
        }
        let residual_sum: f64 = part.residual_sum.iter().sum();
        let mut seconds = part.seconds;
        seconds.add(&clock.seconds);
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
            expert_loss: self.cfg.ppo.expert_guided().then_some(l.expert_loss),
            explained_variance: up.explained_variance,
            learning_rate: up.learning_rate,
            residual_magnitude: (residual_sum / (total * self.ppo.ac.act_dim()) as f64) as f32,
            ramp,
            early_stopped: up.early_stopped,
            actor_frozen: up.actor_frozen,
            steps_per_second: total as f32 / started.elapsed().as_secs_f32(),
            seconds,
            validation_driving_score: None,
        })
    }

    /// Writes a checkpoint atomically: the networks, the optimiser, the counters, and the
    /// training worlds' state (`env`, `running_return`: every world's, in world order).
    pub fn save(&self, path: &Path, env: &EnvSnapshot, running_return: &[f32]) -> Result<()> {
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
        for (i, h) in env.histories.iter().enumerate() {
            tensors.push((format!("env.history.{i}"), vec![h.len()], h));
        }
        if let Some(sel) = &self.selection {
            for (t, data) in ac.named_tensors().into_iter().zip(&sel.tensors) {
                tensors.push((format!("{SELECTED}{}", t.name), t.shape, data));
            }
        }
        let selected = self.selection.as_ref().map(
            |s| serde_json::json!({"iteration": s.iteration, "score": s.score, "ramp": s.ramp}),
        );
        let meta = serde_json::json!({
            "kind": CHECKPOINT_KIND,
            "schema_version": CHECKPOINT_VERSION,
            "sft_hash": self.sft_hash,
            "config": self.cfg,
            "sim": self.sim,
            "scenarios": self.scenarios,
            "seed": self.seed,
            "iteration": self.iteration,
            "env_steps": self.env_steps,
            "kl_sft_coef": self.ppo.kl_sft_coef,
            "ppo_iteration": self.ppo.iteration,
            "optim_steps": self.ppo.optim.groups.iter().map(|g| g.step).collect::<Vec<_>>(),
            "env_episodes": env.episodes,
            "running_return": running_return,
            "obs_dim": self.obs_dim,
            "horizon": self.sim.horizon,
            "selected": selected,
        });
        save_tensors(path, &tensors, &meta)
    }

    /// Reads a checkpoint written by [`Learner::save`] for `planner`: the learner, and the
    /// training worlds' snapshot and running returns.
    pub fn resume(
        path: &Path,
        planner: &impl FrozenPlanner,
    ) -> Result<(Self, EnvSnapshot, Vec<f32>)> {
        let loaded = load_tensors(path, CHECKPOINT_KIND, CHECKPOINT_VERSION)?;
        Learner::resume_loaded(path, loaded, planner)
    }

    fn resume_loaded(
        path: &Path,
        (meta, mut tensors): (crate::checkpoint::Metadata, crate::checkpoint::TensorMap),
        planner: &impl FrozenPlanner,
    ) -> Result<(Self, EnvSnapshot, Vec<f32>)> {
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
        sim.validate()
            .map_err(|e| meta.incompatible(format!("its [sim] is invalid: {e}")))?;
        scenarios
            .validate()
            .map_err(|e| meta.incompatible(format!("its scenarios are invalid: {e}")))?;
        let mut l = Learner::new(cfg, sim, scenarios, planner, seed)?;
        load_actor_critic(&mut l.ppo.ac, &mut tensors, path, CHECKPOINT_KIND)?;
        let steps: Vec<u64> = meta.field("optim_steps")?;
        for (g, group) in l.ppo.optim.groups.iter_mut().enumerate() {
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
            if data.len() % planner.action_dim() != 0 {
                return Err(LearnError::Checkpoint(format!(
                    "{shown}: world {i}'s history of {} floats is not a whole number of {}-float \
                     plans",
                    data.len(),
                    planner.action_dim()
                )));
            }
            histories.push(data);
        }
        l.iteration = meta.field("iteration")?;
        l.env_steps = meta.field("env_steps")?;
        l.selection = read_selection(&meta, &mut tensors, &l.ppo.ac, path)?;
        l.ppo.kl_sft_coef = meta.field("kl_sft_coef")?;
        l.ppo.iteration = meta.field("ppo_iteration")?;
        let running_return: Vec<f32> = meta.field("running_return")?;
        if running_return.len() != worlds {
            return Err(meta.incompatible(format!(
                "it stores {} running returns for {worlds} worlds",
                running_return.len()
            )));
        }
        let snap = EnvSnapshot {
            seed,
            episodes,
            histories,
        };
        Ok((l, snap, running_return))
    }
}

/// The RNG of one iteration (action noise, then minibatch shuffles): a function of the seed and the
/// iteration number, so a checkpoint needs no RNG state to resume exactly.
fn iteration_rng(seed: u64, iteration: usize) -> Pcg64 {
    seed::rng(
        seed,
        (iteration as u64 + 1).wrapping_mul(seed::GOLDEN_GAMMA),
    )
}

/// Sums over episodes that ended during a rollout, in f64 and in (step, world) order.
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
    fn add(&mut self, e: &EndedEpisode) {
        self.count += 1;
        self.episode_return += f64::from(e.episode_return);
        self.driving_score += f64::from(e.driving_score);
        self.route_completion += f64::from(e.route_completion);
        self.collisions += f64::from(u8::from(e.collided));
        self.offroads += f64::from(u8::from(e.offroad));
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
