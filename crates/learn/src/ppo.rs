//! PPO (clipped surrogate, Schulman et al. 2017) for the residual delta head, CleanRL semantics,
//! with an analytic backward pass and no autodiff library.
//!
//! Per minibatch, with `mu = actor(s)`, `V = critic(s)`, `logp = log N(u; mu, sigma)`:
//! - advantages normalised per minibatch: `(A - mean) / (std + 1e-8)`, std with Bessel's
//!   correction like `torch.std`;
//! - `r = exp(logp - old_logp)`, `pg_loss = mean(max(-A r, -A clip(r, 1 - eps, 1 + eps)))`;
//! - `v_loss = 0.5 mean((V - R)^2)`, or with `clip_vloss`
//!   `0.5 mean(max((V - R)^2, (V_old + clip(V - V_old, -eps, eps) - R)^2))`;
//! - `entropy` = mean Gaussian entropy of `u`; `kl_sft` = mean KL(pi || pi_sft) (see [`crate::dist`]);
//! - `expert_loss = mean((tanh(mu) - c)^2)` over the batch and the action's coordinates, `c`
//!   the privileged expert's correction to the frozen plan in units of `max_delta`, clipped to
//!   [-1, 1] (recorded in the rollout; see [`PpoConfig::expert_coef`]);
//! - `loss = pg_loss - ent_coef * entropy + vf_coef * v_loss + beta * kl_sft
//!   + expert_coef * expert_loss`.
//!
//! Gradients follow PyTorch's autograd conventions exactly, including ties: `max(a, b)` sends
//! half the gradient to each side when `a == b`, and `clamp` passes the gradient on its closed
//! interval. A minibatch step is then: global grad-norm clip over actor, log-std and critic,
//! AdamW. Actor and critic run side by side (`rayon::join`); each is sequential inside, so the
//! bits do not depend on the number of threads.
//!
//! Departures from CleanRL's `ppo_continuous_action.py`, each on purpose:
//! - **tanh squash**: the executed correction is `max_delta * tanh(u)`; the rollout stores `u`,
//!   so log-probabilities stay exact Gaussian ones (the squash's Jacobian cancels in the ratio);
//! - **KL to the SFT policy**: `beta * KL(pi || pi_sft)` in the loss, beta optionally adapted
//!   towards `kl_sft_target` after each update;
//! - **target KL, SB3 style**: a minibatch whose approx_kl exceeds `1.5 * target_kl` ends the
//!   update before its gradient step (CleanRL checks after each epoch);
//! - **critic warm-up**: for the first `critic_warmup_iters` updates only the critic is stepped;
//! - **expert guidance** (off in CleanRL's setting): where the simulator has a privileged
//!   expert, the actor's mean correction is also pulled towards the expert's correction on the
//!   states the policy visits (DAgger's labels, as an auxiliary loss beside PPO's);
//! - **truncation-aware GAE** ([`crate::gae()`]): a truncated episode bootstraps from
//!   `V(final observation)`, a terminated one from 0;
//! - **reward scale**: rewards are multiplied by `refine.reward_scale` before GAE
//!   (in the refinement loop), keeping value targets O(1).
//!
//! Reading order: [`Ppo`] and its [`Ppo::update`], the settings ([`PpoConfig`]), the data it
//! consumes and reports, the loss with its analytic gradients, and last the workspaces.

use deltaplan_stdx::seed::shuffle;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::actor_critic::{ActorCritic, PAR_MIN_FLOATS};
use crate::checkpoint::{all_finite, first_non_finite};
use crate::dist;
use crate::error::{check_len, rows_of, LearnError, Result};
use crate::nn::MlpWorkspace;
use crate::optim::{AdamW, AdamWConfig};

// ---------------------------------------------------------------------------------------------
// PPO trainer
// ---------------------------------------------------------------------------------------------

/// PPO trainer: the actor-critic, its optimiser, the adaptive KL coefficient and the
/// preallocated workspaces.
#[derive(Clone, Debug)]
pub struct Ppo {
    /// Hyper-parameters.
    pub cfg: PpoConfig,
    /// Policy and value networks.
    pub ac: ActorCritic,
    /// One AdamW over actor, log-std and critic (groups 0, 1, 2).
    pub optim: AdamW,
    /// Current KL-to-SFT coefficient beta.
    pub kl_sft_coef: f32,
    /// Number of completed updates (drives annealing and critic warm-up).
    pub iteration: usize,
    /// Updates the run will make: the learning rate anneals to 0 over them.
    pub num_iterations: usize,
    loss_ws: LossWorkspace,
    mb: MinibatchBuf,
    perm: Vec<usize>,
}

impl Ppo {
    /// Trainer for `ac` with a fresh optimiser, for a run of `num_iterations` updates (the
    /// learning-rate schedule's length).
    pub fn new(cfg: PpoConfig, ac: ActorCritic, num_iterations: usize) -> Result<Self> {
        cfg.validate()?;
        let optim = AdamW::new(cfg.adamw(), &ac.param_groups());
        Ok(Self {
            kl_sft_coef: cfg.kl_sft_coef,
            cfg,
            ac,
            optim,
            iteration: 0,
            num_iterations,
            loss_ws: LossWorkspace::default(),
            mb: MinibatchBuf::default(),
            perm: Vec::new(),
        })
    }

    /// Loss terms and gradients (into `self.ac`'s gradient buffers, zeroed first) for one
    /// minibatch with KL coefficient `beta`. No optimiser step.
    pub fn minibatch_loss_and_grads(
        &mut self,
        batch: MinibatchRef<'_>,
        beta: f32,
    ) -> Result<LossStats> {
        loss_and_grads(&self.cfg, &mut self.ac, &mut self.loss_ws, batch, beta)
    }

    /// Learning rate of the current iteration.
    pub fn current_lr(&self) -> f64 {
        if self.cfg.anneal_lr {
            self.cfg.lr_at(self.iteration, self.num_iterations)
        } else {
            self.cfg.learning_rate
        }
    }

    /// One PPO update: `update_epochs` passes over a seeded shuffle of the rollout in
    /// `num_minibatches` near-equal minibatches; per minibatch loss + grads, target-KL check,
    /// global clip, AdamW. Then adapts beta and advances the iteration counter.
    pub fn update<R: Rng + ?Sized>(
        &mut self,
        rollout: &RolloutBatch,
        rng: &mut R,
    ) -> Result<UpdateStats> {
        let (d, a) = (self.ac.obs_dim(), self.ac.act_dim());
        let n = rollout.as_minibatch().validate(d, a)?;
        let k = self.cfg.num_minibatches;
        let min_mb = self.cfg.min_minibatch_len();
        if n < k * min_mb {
            return Err(LearnError::Config(format!(
                "rollout of {n} samples is too small for {k} minibatches of at least {min_mb}"
            )));
        }
        let lr = self.current_lr();
        self.optim.set_lr(lr);
        let actor_frozen = self.iteration < self.cfg.critic_warmup_iters;
        let beta = self.kl_sft_coef;

        self.perm.clear();
        self.perm.extend(0..n);
        let mut sums = LossSums::default();
        let mut early_stopped = false;
        let update = self.iteration + 1;
        'epochs: for epoch in 1..=self.cfg.update_epochs {
            shuffle(&mut self.perm, rng);
            for m in 0..k {
                // Where a non-finite number is found: before any step it could poison.
                let at = || {
                    format!(
                        "refinement iteration {update} (PPO epoch {epoch}, minibatch {})",
                        m + 1
                    )
                };
                let idx = &self.perm[m * n / k..(m + 1) * n / k];
                self.mb.gather(rollout, idx, d, a);
                let s = loss_and_grads(
                    &self.cfg,
                    &mut self.ac,
                    &mut self.loss_ws,
                    self.mb.rows(d, a),
                    beta,
                )?;
                if let Some(bad) = s.as_array().iter().position(|x| !x.is_finite()) {
                    return Err(LearnError::NonFinite {
                        what: format!("PPO loss term `{}`", LossStats::NAMES[bad]),
                        at: at(),
                    });
                }
                if self.cfg.target_kl.is_some_and(|t| s.approx_kl > 1.5 * t) {
                    early_stopped = true;
                    break 'epochs;
                }
                if actor_frozen {
                    self.ac.actor.zero_grad();
                    self.ac.log_std_grad.fill(0.0);
                }
                if deltaplan_stdx::fault::inject_nan(|| "ppo:gradient".into()) {
                    self.ac.critic.grads_mut()[0] = f32::NAN;
                }
                // Flat checks first (no allocation); names only when one fails.
                let ac = &self.ac;
                let grads_ok = all_finite(ac.actor.grads())
                    && all_finite(&ac.log_std_grad)
                    && all_finite(ac.critic.grads());
                if let Some(what) = (!grads_ok)
                    .then(|| first_non_finite(&self.ac.named_grads()))
                    .flatten()
                {
                    return Err(LearnError::NonFinite {
                        what: format!("gradient of {what}"),
                        at: at(),
                    });
                }
                let norm = self.ac.clip_grad_norm(self.cfg.max_grad_norm);
                self.ac.optimizer_step(&mut self.optim, actor_frozen)?;
                if deltaplan_stdx::fault::inject_nan(|| "ppo:weight".into()) {
                    self.ac.critic.params_mut()[0] = f32::INFINITY;
                }
                let ac = &self.ac;
                let weights_ok = all_finite(ac.actor.params())
                    && all_finite(&ac.log_std)
                    && all_finite(ac.critic.params());
                if let Some(what) = (!weights_ok)
                    .then(|| first_non_finite(&self.ac.named_tensors()))
                    .flatten()
                {
                    return Err(LearnError::NonFinite {
                        what: format!("weight {what} after the optimiser step"),
                        at: at(),
                    });
                }
                sums += (&s, norm);
            }
        }
        let (losses, grad_norm) = sums.mean();
        let steps = sums.steps;
        if let (true, Some(target)) = (self.cfg.kl_sft_adaptive, self.cfg.kl_sft_target) {
            if steps > 0 && losses.kl_sft > 1.5 * target {
                self.kl_sft_coef *= 2.0;
            } else if steps > 0 && losses.kl_sft < target / 1.5 {
                self.kl_sft_coef *= 0.5;
            }
        }
        self.iteration += 1;
        Ok(UpdateStats {
            losses,
            grad_norm,
            explained_variance: explained_variance(&rollout.values, &rollout.returns),
            learning_rate: lr,
            kl_sft_coef: beta,
            next_kl_sft_coef: self.kl_sft_coef,
            minibatch_steps: steps,
            early_stopped,
            actor_frozen,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Settings, data and statistics
// ---------------------------------------------------------------------------------------------

/// PPO hyper-parameters (CleanRL names). `Default` holds deltaplan's values, the only place
/// they are written; [`PpoConfig::cleanrl`] is CleanRL's reference setting. The number of
/// iterations the learning rate anneals over is not a setting: [`Ppo::new`] takes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PpoConfig {
    /// Base learning rate.
    pub learning_rate: f64,
    /// Linear decay to 0 over the run's iterations ([`PpoConfig::lr_at`]).
    pub anneal_lr: bool,
    /// Passes over the rollout per update.
    pub update_epochs: usize,
    /// Minibatches per pass (the rollout is split into near-equal parts).
    pub num_minibatches: usize,
    /// PPO clip epsilon (ratio and, with `clip_vloss`, value).
    pub clip_coef: f32,
    /// Clipped value loss.
    pub clip_vloss: bool,
    /// Per-minibatch advantage normalisation.
    pub norm_adv: bool,
    /// Entropy bonus coefficient.
    pub ent_coef: f32,
    /// Value loss coefficient.
    pub vf_coef: f32,
    /// Global gradient-norm bound.
    pub max_grad_norm: f32,
    /// SB3 early stop: end the update when a minibatch's approx_kl > 1.5 * target_kl (checked
    /// before its gradient step). Unset: never stop early.
    pub target_kl: Option<f32>,
    /// Initial coefficient beta of the KL penalty to the SFT reference policy (0 = off).
    pub kl_sft_coef: f32,
    /// Target KL to the reference for adaptive beta (needed by `kl_sft_adaptive`).
    pub kl_sft_target: Option<f32>,
    /// Adapt beta after each update: x2 if KL > 1.5 target, /2 if KL < target / 1.5.
    pub kl_sft_adaptive: bool,
    /// AdamW decoupled weight decay on network weights and biases (not on log-std).
    pub weight_decay: f64,
    /// Adam epsilon (CleanRL: 1e-5).
    pub adam_eps: f64,
    /// Critic warm-up: for the first K updates only the critic is stepped.
    pub critic_warmup_iters: usize,
    /// Coefficient of the expert-guidance loss: the squared distance between the actor's mean
    /// correction `tanh(mu)` and the privileged expert's correction on the visited states
    /// (DAgger-style labels, which the rollout records when this is not 0). 0: pure PPO.
    pub expert_coef: f32,
}

impl Default for PpoConfig {
    /// deltaplan's refinement: CleanRL's values with 8 minibatches and 2 epochs (half the
    /// update's time; no measured loss of quality), a target-KL early stop at 0.05, 3
    /// iterations of critic warm-up and expert guidance at 20 (README: it keeps the families
    /// from regressing and lets a planner PPO alone cannot fix, the BEV-CNN, be refined).
    fn default() -> Self {
        Self {
            update_epochs: 2,
            num_minibatches: 8,
            target_kl: Some(0.05),
            critic_warmup_iters: 3,
            expert_coef: 20.0,
            ..Self::cleanrl()
        }
    }
}

impl PpoConfig {
    /// CleanRL's `ppo_continuous_action.py` setting (the reference the parity tests use).
    pub fn cleanrl() -> Self {
        Self {
            learning_rate: 3e-4,
            anneal_lr: true,
            update_epochs: 4,
            num_minibatches: 4,
            clip_coef: 0.2,
            clip_vloss: true,
            norm_adv: true,
            ent_coef: 0.0,
            vf_coef: 0.5,
            max_grad_norm: 0.5,
            target_kl: None,
            kl_sft_coef: 0.0,
            kl_sft_target: None,
            kl_sft_adaptive: false,
            weight_decay: 0.0,
            adam_eps: 1e-5,
            critic_warmup_iters: 0,
            expert_coef: 0.0,
        }
    }

    /// Whether the expert-guidance loss is on, so rollouts must record the expert's
    /// corrections ([`crate::rollout::Collector::record_expert`]).
    pub fn expert_guided(&self) -> bool {
        self.expert_coef > 0.0
    }

    /// Linearly annealed learning rate for 0-based `iteration` of `total`:
    /// `lr * (1 - iteration / total)` (CleanRL's schedule), never negative.
    pub fn lr_at(&self, iteration: usize, total: usize) -> f64 {
        if total == 0 {
            return self.learning_rate;
        }
        let frac = 1.0 - iteration as f64 / total as f64;
        self.learning_rate * frac.max(0.0)
    }

    /// The AdamW configuration these settings imply.
    pub fn adamw(&self) -> AdamWConfig {
        AdamWConfig {
            lr: self.learning_rate,
            eps: self.adam_eps,
            weight_decay: self.weight_decay,
            ..AdamWConfig::default()
        }
    }

    /// Samples a minibatch needs at least (advantage normalisation takes a standard deviation).
    pub fn min_minibatch_len(&self) -> usize {
        if self.norm_adv {
            2
        } else {
            1
        }
    }

    /// Rejects values that cannot work, naming the field (`ppo.<field>`).
    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(LearnError::Config(format!("ppo.{what}")));
        let finite_in = |x: f64, lo: f64, hi: f64| x.is_finite() && x >= lo && x <= hi;
        if self.update_epochs == 0 {
            return bad("update_epochs must be at least 1".into());
        }
        if self.num_minibatches == 0 {
            return bad("num_minibatches must be at least 1".into());
        }
        let floats: [(&str, f64, f64, f64); 8] = [
            ("learning_rate", self.learning_rate, 0.0, 1.0),
            ("ent_coef", f64::from(self.ent_coef), -10.0, 10.0),
            ("vf_coef", f64::from(self.vf_coef), 0.0, 100.0),
            ("max_grad_norm", f64::from(self.max_grad_norm), 1e-12, 1e6),
            ("kl_sft_coef", f64::from(self.kl_sft_coef), 0.0, 1e6),
            ("weight_decay", self.weight_decay, 0.0, 0.999_999),
            ("adam_eps", self.adam_eps, 1e-20, 1.0),
            ("expert_coef", f64::from(self.expert_coef), 0.0, 1e6),
        ];
        for (field, value, lo, hi) in floats {
            if !finite_in(value, lo, hi) {
                return bad(format!(
                    "{field} = {value} is out of range: allowed {lo} to {hi}"
                ));
            }
        }
        if !(self.clip_coef > 0.0 && self.clip_coef < 1.0) {
            return bad(format!("clip_coef = {} must be in (0, 1)", self.clip_coef));
        }
        for (field, value) in [
            ("target_kl", self.target_kl),
            ("kl_sft_target", self.kl_sft_target),
        ] {
            if let Some(t) = value.filter(|t| !(t.is_finite() && *t > 0.0)) {
                return bad(format!("{field} = {t} must be positive and finite"));
            }
        }
        if self.kl_sft_adaptive && self.kl_sft_target.is_none() {
            return bad("kl_sft_adaptive needs kl_sft_target to be set".into());
        }
        Ok(())
    }
}

/// One minibatch, borrowed: `obs [B, D]`, `u [B, A]`, and `[B]` vectors.
#[derive(Clone, Copy, Debug)]
pub struct MinibatchRef<'a> {
    /// Observations.
    pub obs: &'a [f32],
    /// Stored pre-squash actions.
    pub u: &'a [f32],
    /// `log N(u; mu_old, sigma_old)` at rollout time.
    pub old_logp: &'a [f32],
    /// GAE advantages (unnormalised).
    pub advantages: &'a [f32],
    /// GAE returns (value targets).
    pub returns: &'a [f32],
    /// Values at rollout time (for value clipping).
    pub old_values: &'a [f32],
    /// The expert's correction per action coordinate in units of `max_delta`, clipped to
    /// [-1, 1], `[B, A]`; empty when the rollout recorded none (expert guidance off).
    pub expert: &'a [f32],
}

impl MinibatchRef<'_> {
    /// Checks all shapes; returns the batch size.
    pub fn validate(&self, obs_dim: usize, act_dim: usize) -> Result<usize> {
        let b = rows_of("obs", self.obs.len(), obs_dim)?;
        check_len("u", self.u.len(), b * act_dim)?;
        check_len("old_logp", self.old_logp.len(), b)?;
        check_len("advantages", self.advantages.len(), b)?;
        check_len("returns", self.returns.len(), b)?;
        check_len("old_values", self.old_values.len(), b)?;
        if !self.expert.is_empty() {
            check_len("expert", self.expert.len(), b * act_dim)?;
        }
        Ok(b)
    }
}

/// A whole rollout flattened over time and environments, ready for [`Ppo::update`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RolloutBatch {
    /// `[N, D]`.
    pub obs: Vec<f32>,
    /// `[N, A]` pre-squash actions.
    pub u: Vec<f32>,
    /// `[N]` Gaussian log-probs of `u` at rollout time.
    pub logp: Vec<f32>,
    /// `[N]` GAE advantages.
    pub advantages: Vec<f32>,
    /// `[N]` GAE returns.
    pub returns: Vec<f32>,
    /// `[N]` values at rollout time.
    pub values: Vec<f32>,
    /// `[N, A]` the expert's corrections ([`MinibatchRef::expert`]); empty when not recorded.
    #[serde(default)]
    pub expert: Vec<f32>,
}

impl RolloutBatch {
    /// The whole rollout as one minibatch.
    pub fn as_minibatch(&self) -> MinibatchRef<'_> {
        MinibatchRef {
            obs: &self.obs,
            u: &self.u,
            old_logp: &self.logp,
            advantages: &self.advantages,
            returns: &self.returns,
            old_values: &self.values,
            expert: &self.expert,
        }
    }

    /// The first `n` rows as a minibatch (`d` observation and `a` action floats per row).
    fn first_rows(&self, n: usize, d: usize, a: usize) -> MinibatchRef<'_> {
        MinibatchRef {
            obs: &self.obs[..n * d],
            u: &self.u[..n * a],
            old_logp: &self.logp[..n],
            advantages: &self.advantages[..n],
            returns: &self.returns[..n],
            old_values: &self.values[..n],
            expert: if self.expert.is_empty() {
                &[]
            } else {
                &self.expert[..n * a]
            },
        }
    }
}

/// Loss terms of one minibatch (before the optimiser step).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LossStats {
    /// Total loss that was differentiated.
    pub loss: f32,
    /// Clipped surrogate loss.
    pub pg_loss: f32,
    /// Value loss (with the 0.5 factor).
    pub v_loss: f32,
    /// Mean Gaussian entropy of `u`.
    pub entropy: f32,
    /// Mean KL(pi || pi_sft).
    pub kl_sft: f32,
    /// k3 estimator of KL(old || new): `mean((r - 1) - ln r)`.
    pub approx_kl: f32,
    /// `mean(-ln r)`.
    pub old_approx_kl: f32,
    /// Fraction of samples with `|r - 1| > clip_coef`.
    pub clip_frac: f32,
    /// Mean squared distance between the actor's mean correction and the expert's, in units
    /// of `max_delta` (0 when the rollout recorded no expert corrections).
    #[serde(default)]
    pub expert_loss: f32,
}

impl LossStats {
    /// Names of the terms of [`LossStats::as_array`], in its order.
    pub const NAMES: [&'static str; 9] = [
        "loss",
        "pg_loss",
        "v_loss",
        "entropy",
        "kl_sft",
        "approx_kl",
        "old_approx_kl",
        "clip_frac",
        "expert_loss",
    ];

    /// The terms in declaration order: loss, pg_loss, v_loss, entropy, kl_sft, approx_kl,
    /// old_approx_kl, clip_frac, expert_loss (for averaging and comparisons).
    pub fn as_array(&self) -> [f32; 9] {
        [
            self.loss,
            self.pg_loss,
            self.v_loss,
            self.entropy,
            self.kl_sft,
            self.approx_kl,
            self.old_approx_kl,
            self.clip_frac,
            self.expert_loss,
        ]
    }
}

/// Sums of the loss terms and gradient norms of the minibatch steps an update applied, in
/// f64 and in step order; `sums += (&stats, grad_norm)`, then [`LossSums::mean`].
#[derive(Clone, Copy, Debug, Default)]
struct LossSums {
    loss: f64,
    pg_loss: f64,
    v_loss: f64,
    entropy: f64,
    kl_sft: f64,
    approx_kl: f64,
    old_approx_kl: f64,
    clip_frac: f64,
    expert_loss: f64,
    grad_norm: f64,
    steps: usize,
}

impl std::ops::AddAssign<(&LossStats, f32)> for LossSums {
    fn add_assign(&mut self, (s, grad_norm): (&LossStats, f32)) {
        self.loss += f64::from(s.loss);
        self.pg_loss += f64::from(s.pg_loss);
        self.v_loss += f64::from(s.v_loss);
        self.entropy += f64::from(s.entropy);
        self.kl_sft += f64::from(s.kl_sft);
        self.approx_kl += f64::from(s.approx_kl);
        self.old_approx_kl += f64::from(s.old_approx_kl);
        self.clip_frac += f64::from(s.clip_frac);
        self.expert_loss += f64::from(s.expert_loss);
        self.grad_norm += f64::from(grad_norm);
        self.steps += 1;
    }
}

impl LossSums {
    /// Mean loss terms and mean gradient norm (zeros when no step was applied).
    fn mean(&self) -> (LossStats, f32) {
        let mean = |sum: f64| {
            if self.steps == 0 {
                0.0
            } else {
                (sum / self.steps as f64) as f32
            }
        };
        let losses = LossStats {
            loss: mean(self.loss),
            pg_loss: mean(self.pg_loss),
            v_loss: mean(self.v_loss),
            entropy: mean(self.entropy),
            kl_sft: mean(self.kl_sft),
            approx_kl: mean(self.approx_kl),
            old_approx_kl: mean(self.old_approx_kl),
            clip_frac: mean(self.clip_frac),
            expert_loss: mean(self.expert_loss),
        };
        (losses, mean(self.grad_norm))
    }
}

/// Summary of one [`Ppo::update`] (loss terms are means over the minibatches that were applied).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UpdateStats {
    /// Mean loss terms.
    pub losses: LossStats,
    /// Mean pre-clip global gradient norm.
    pub grad_norm: f32,
    /// `1 - Var(returns - values) / Var(returns)` over the rollout (NaN if Var(returns) = 0).
    pub explained_variance: f32,
    /// Learning rate used.
    pub learning_rate: f64,
    /// KL-to-SFT coefficient used in this update.
    pub kl_sft_coef: f32,
    /// Coefficient for the next update (after adaptation).
    pub next_kl_sft_coef: f32,
    /// Optimiser steps taken.
    pub minibatch_steps: usize,
    /// Whether the target-KL rule stopped the update early.
    pub early_stopped: bool,
    /// Whether the actor was frozen (critic warm-up).
    pub actor_frozen: bool,
}

/// `1 - Var(y_true - y_pred) / Var(y_true)` (population variances, f64), NaN if `Var(y_true) = 0`.
pub fn explained_variance(y_pred: &[f32], y_true: &[f32]) -> f32 {
    let n = y_true.len().min(y_pred.len());
    if n == 0 {
        return f32::NAN;
    }
    let (t, p) = (&y_true[..n], &y_pred[..n]);
    let mean_var = |f: &dyn Fn(usize) -> f64| {
        let mean = (0..n).map(f).sum::<f64>() / n as f64;
        (0..n).map(|i| (f(i) - mean).powi(2)).sum::<f64>() / n as f64
    };
    let var_y = mean_var(&|i| f64::from(t[i]));
    if var_y == 0.0 {
        return f32::NAN;
    }
    let var_res = mean_var(&|i| f64::from(t[i]) - f64::from(p[i]));
    (1.0 - var_res / var_y) as f32
}

// ---------------------------------------------------------------------------------------------
// Loss and analytic gradients
// ---------------------------------------------------------------------------------------------

/// Which branch of `max(a, b)` gets the gradient, PyTorch style: all to the larger, half each
/// on a tie. Returns the value and the combined derivative.
#[inline]
fn max_with_grad(a: f32, da: f32, b: f32, db: f32) -> (f32, f32) {
    if a > b {
        (a, da)
    } else if a < b {
        (b, db)
    } else {
        (a, 0.5 * (da + db))
    }
}

/// Forward, loss and analytic backward for one minibatch; gradients are zeroed first.
fn loss_and_grads(
    cfg: &PpoConfig,
    ac: &mut ActorCritic,
    ws: &mut LossWorkspace,
    mb: MinibatchRef<'_>,
    beta: f32,
) -> Result<LossStats> {
    let (d, a) = (ac.obs_dim(), ac.act_dim());
    let b = mb.validate(d, a)?;
    if b == 0 || (cfg.norm_adv && b < 2) {
        return Err(LearnError::Config(format!(
            "a minibatch needs at least {} samples, got {b}",
            if cfg.norm_adv { 2 } else { 1 }
        )));
    }
    ac.zero_grad();
    let LossWorkspace {
        actor: wa,
        critic: wc,
        logp,
        adv,
        dlogp,
        dmu,
        dv,
        kl,
        dkl,
    } = ws;
    for v in [
        &mut *logp,
        &mut *adv,
        &mut *dlogp,
        &mut *dv,
        &mut *kl,
        &mut *dkl,
    ] {
        grow(v, b);
    }
    grow(dmu, b * a);
    let (logp, adv, dlogp, dv, kl, dkl) = (
        &mut logp[..b],
        &mut adv[..b],
        &mut dlogp[..b],
        &mut dv[..b],
        &mut kl[..b],
        &mut dkl[..b],
    );
    let dmu = &mut dmu[..b * a];
    let ActorCritic {
        actor,
        critic,
        log_std,
        log_std_grad,
        ref_log_std,
        ..
    } = ac;
    let inv_b = 1.0 / b as f32;

    // Forward.
    let (mu, value) = ActorCritic::forward_both(actor, critic, mb.obs, &mut *wa, &mut *wc)?;
    dist::gaussian_log_prob(mb.u, mu, log_std, logp)?;

    // Per-minibatch advantage normalisation (torch.std: Bessel's correction).
    if cfg.norm_adv {
        let mean = mb.advantages.iter().map(|&x| f64::from(x)).sum::<f64>() / b as f64;
        let var = mb
            .advantages
            .iter()
            .map(|&x| (f64::from(x) - mean).powi(2))
            .sum::<f64>()
            / (b - 1) as f64;
        let (mean, denom) = (mean as f32, var.sqrt() as f32 + 1e-8);
        for (n, &x) in adv.iter_mut().zip(mb.advantages) {
            *n = (x - mean) / denom;
        }
    } else {
        adv.copy_from_slice(mb.advantages);
    }

    // Clipped surrogate and its derivative w.r.t. the new log-prob.
    let eps = cfg.clip_coef;
    let (lo, hi) = ((1.0 - f64::from(eps)) as f32, (1.0 + f64::from(eps)) as f32);
    let (mut pg_sum, mut kl_k3, mut kl_old, mut clipped) = (0.0f64, 0.0f64, 0.0f64, 0usize);
    for (((g, &lp), &old), &an) in dlogp.iter_mut().zip(&*logp).zip(mb.old_logp).zip(&*adv) {
        let logr = lp - old;
        let r = logr.exp();
        let in_range = (lo..=hi).contains(&r);
        let (pg, dpg_dr) = max_with_grad(
            -an * r,
            -an,
            -an * r.clamp(lo, hi),
            if in_range { -an } else { 0.0 },
        );
        pg_sum += f64::from(pg);
        *g = dpg_dr * inv_b * r; // d ratio / d logp = ratio
        kl_k3 += f64::from((r - 1.0) - logr);
        kl_old += f64::from(-logr);
        clipped += usize::from((r - 1.0).abs() > eps);
    }
    dmu.fill(0.0);
    dist::gaussian_log_prob_backward(mb.u, mu, log_std, dlogp, dmu, log_std_grad)?;

    // Entropy bonus: d(-ent_coef * entropy) / d log_std_j = -ent_coef.
    let entropy = dist::entropy(log_std);
    log_std_grad.iter_mut().for_each(|g| *g -= cfg.ent_coef);

    // KL to the SFT reference policy.
    dist::kl_to_reference(mu, log_std, ref_log_std, kl)?;
    let kl_sft = (kl.iter().map(|&x| f64::from(x)).sum::<f64>() / b as f64) as f32;
    if beta != 0.0 {
        dkl.fill(beta * inv_b);
        dist::kl_to_reference_backward(mu, log_std, ref_log_std, dkl, dmu, log_std_grad)?;
    }

    // Expert guidance: (tanh(mu) - c)^2 averaged over batch and coordinates;
    // d/dmu = 2 (tanh(mu) - c) (1 - tanh(mu)^2) / (B A).
    let mut expert_sum = 0.0f64;
    if !mb.expert.is_empty() {
        let scale = cfg.expert_coef * 2.0 * inv_b / a as f32;
        for ((g, &m), &c) in dmu.iter_mut().zip(mu).zip(mb.expert) {
            let t = m.tanh();
            let e = t - c;
            expert_sum += f64::from(e * e);
            *g += scale * e * (1.0 - t * t);
        }
    } else if cfg.expert_coef != 0.0 {
        return Err(LearnError::Config(
            "ppo.expert_coef is on but the rollout recorded no expert corrections".into(),
        ));
    }
    let expert_loss = (expert_sum / (b * a) as f64) as f32;

    // Value loss (optionally clipped) and dL/dV.
    let mut v_sum = 0.0f64;
    let scale = cfg.vf_coef * 0.5 * inv_b;
    for ((((g, &v), &ret), &v_old), _) in dv
        .iter_mut()
        .zip(value)
        .zip(mb.returns)
        .zip(mb.old_values)
        .zip(0..b)
    {
        let err = v - ret;
        let (l, dl) = if cfg.clip_vloss {
            let diff = v - v_old;
            let v_clipped = v_old + diff.clamp(-eps, eps);
            let err_c = v_clipped - ret;
            let d_c = if (-eps..=eps).contains(&diff) {
                2.0 * err_c
            } else {
                0.0
            };
            max_with_grad(err * err, 2.0 * err, err_c * err_c, d_c)
        } else {
            (err * err, 2.0 * err)
        };
        v_sum += f64::from(l);
        *g = scale * dl;
    }
    let v_loss = (0.5 * v_sum / b as f64) as f32;
    let pg_loss = (pg_sum / b as f64) as f32;

    // Backward through both networks.
    let obs = mb.obs;
    let (ra, rc) = if obs.len() >= PAR_MIN_FLOATS {
        rayon::join(
            || actor.backward(obs, wa, dmu, None),
            || critic.backward(obs, wc, dv, None),
        )
    } else {
        (
            actor.backward(obs, wa, dmu, None),
            critic.backward(obs, wc, dv, None),
        )
    };
    ra?;
    rc?;

    Ok(LossStats {
        loss: pg_loss - cfg.ent_coef * entropy
            + cfg.vf_coef * v_loss
            + beta * kl_sft
            + cfg.expert_coef * expert_loss,
        pg_loss,
        v_loss,
        entropy,
        kl_sft,
        approx_kl: (kl_k3 / b as f64) as f32,
        old_approx_kl: (kl_old / b as f64) as f32,
        clip_frac: clipped as f32 * inv_b,
        expert_loss,
    })
}

// ---------------------------------------------------------------------------------------------
// Workspaces
// ---------------------------------------------------------------------------------------------

/// Grows `v` to at least `n` elements (never shrinks: steady state allocates nothing).
fn grow(v: &mut Vec<f32>, n: usize) {
    if v.len() < n {
        v.resize(n, 0.0);
    }
}

/// Preallocated per-minibatch buffers of the loss computation.
#[derive(Clone, Debug, Default)]
struct LossWorkspace {
    actor: MlpWorkspace,
    critic: MlpWorkspace,
    logp: Vec<f32>,
    adv: Vec<f32>,
    dlogp: Vec<f32>,
    dmu: Vec<f32>,
    dv: Vec<f32>,
    kl: Vec<f32>,
    dkl: Vec<f32>,
}

/// Gathered (shuffled) minibatch copied out of the rollout: the rollout's own layout, grown to
/// the largest minibatch, of which the first `len` rows are valid.
#[derive(Clone, Debug, Default)]
struct MinibatchBuf {
    rows: RolloutBatch,
    len: usize,
}

impl MinibatchBuf {
    fn gather(&mut self, r: &RolloutBatch, idx: &[usize], d: usize, a: usize) {
        let b = idx.len();
        let rows = &mut self.rows;
        grow(&mut rows.obs, b * d);
        grow(&mut rows.u, b * a);
        for v in [
            &mut rows.logp,
            &mut rows.advantages,
            &mut rows.returns,
            &mut rows.values,
        ] {
            grow(v, b);
        }
        let with_expert = !r.expert.is_empty();
        rows.expert.clear(); // keeps its capacity: no allocation in steady state
        if with_expert {
            grow(&mut rows.expert, b * a);
        }
        for (row, &k) in idx.iter().enumerate() {
            rows.obs[row * d..(row + 1) * d].copy_from_slice(&r.obs[k * d..(k + 1) * d]);
            rows.u[row * a..(row + 1) * a].copy_from_slice(&r.u[k * a..(k + 1) * a]);
            if with_expert {
                rows.expert[row * a..(row + 1) * a].copy_from_slice(&r.expert[k * a..(k + 1) * a]);
            }
            rows.logp[row] = r.logp[k];
            rows.advantages[row] = r.advantages[k];
            rows.returns[row] = r.returns[k];
            rows.values[row] = r.values[k];
        }
        self.len = b;
    }

    /// The gathered rows as a minibatch.
    fn rows(&self, d: usize, a: usize) -> MinibatchRef<'_> {
        self.rows.first_rows(self.len, d, a)
    }
}
