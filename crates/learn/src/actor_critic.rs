//! The residual actor-critic: the policy `pi(u | s) = N(actor(s), exp(log_std))` over the
//! pre-squash correction `u`, executed as `delta = max_delta * tanh(u)`, and the value function
//! `critic(s)`. Two MLPs with CleanRL's layout and PyTorch parameter names; inference is
//! [`ActorCritic::sample`] during rollouts and [`ActorCritic::act_deterministic`] at evaluation.
//! The PPO update that trains it is in the `ppo` module.

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::dist;
use crate::error::{check_len, rows_of, LearnError, Result};
use crate::nn::{InferWorkspace, Mlp, MlpInit, MlpWorkspace, OutputInit, TensorView};
use crate::optim::{clip_grad_norm, AdamW};

/// Initial log-std of the pre-squash action `u` (sigma = 0.37): the one default, used by
/// [`ActorCriticConfig::new`] and refinement's `log_std_init`. Measured against -1.5 with the
/// fixed controller (README, "How the defaults were chosen"): it closes more of the gap.
pub const DEFAULT_LOG_STD_INIT: f32 = -1.0;

/// Below this many input floats, actor and critic run one after the other (join overhead).
pub(crate) const PAR_MIN_FLOATS: usize = 1024;

/// Shape and initialisation of the actor (mean of `u`) and critic networks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActorCriticConfig {
    /// Observation width `D`.
    pub obs_dim: usize,
    /// Action width `A` (e.g. 2 x number of waypoints).
    pub act_dim: usize,
    /// Hidden widths shared by actor and critic, e.g. `[256, 256]`.
    pub hidden: Vec<usize>,
    /// Initial log-std of `u`; also the reference policy's exploration `sigma_ref`.
    pub log_std_init: f32,
    /// Actor output layer: `Orthogonal { gain: 0.01 }` (CleanRL) or `Zero` (exact identity).
    pub actor_output: OutputInit,
    /// Critic output-layer orthogonal gain (1.0 in CleanRL).
    pub critic_output_gain: f32,
    /// Per-dimension bound of the executed correction, `delta = max_delta * tanh(u)`.
    pub max_delta: Vec<f32>,
}

impl ActorCriticConfig {
    /// CleanRL-style defaults with a zero actor output layer (iteration 0 = the SFT planner) and
    /// the same `max_delta` on every dimension.
    pub fn new(obs_dim: usize, act_dim: usize, hidden: &[usize], max_delta: f32) -> Self {
        Self {
            obs_dim,
            act_dim,
            hidden: hidden.to_vec(),
            log_std_init: DEFAULT_LOG_STD_INIT,
            actor_output: OutputInit::Zero,
            critic_output_gain: 1.0,
            max_delta: vec![max_delta; act_dim],
        }
    }
}

/// Residual policy `pi(u | s) = N(actor(s), exp(log_std))` and value function `critic(s)`.
#[derive(Clone, Debug, PartialEq)]
pub struct ActorCritic {
    /// Mean of `u`: `D -> hidden -> A`.
    pub actor: Mlp,
    /// State value: `D -> hidden -> 1`.
    pub critic: Mlp,
    /// Learned, state-independent log-std of `u`, `[A]`.
    pub log_std: Vec<f32>,
    /// Gradient of the loss w.r.t. `log_std`.
    pub log_std_grad: Vec<f32>,
    /// Log-std of the frozen reference (SFT) policy `N(0, sigma_ref)` for the KL penalty.
    pub ref_log_std: Vec<f32>,
    /// Per-dimension bound of the executed correction.
    pub max_delta: Vec<f32>,
}

/// Reusable activations for [`ActorCritic::sample`] and [`ActorCritic::act_deterministic`]
/// (one per rollout thread).
#[derive(Clone, Debug, Default)]
pub struct ActWorkspace {
    actor: InferWorkspace,
    critic: InferWorkspace,
}

impl ActWorkspace {
    /// Empty workspace, sized on first use.
    pub fn new() -> Self {
        Self::default()
    }
}

/// Output buffers of [`ActorCritic::sample`] and [`ActorCritic::act_deterministic`] for a
/// batch of `B` observations.
#[derive(Debug)]
pub struct ActOutput<'a> {
    /// Pre-squash action `u`, `[B, A]` (store this in the rollout).
    pub u: &'a mut [f32],
    /// Executed correction `max_delta * tanh(u)`, `[B, A]`.
    pub delta: &'a mut [f32],
    /// `log N(u; mu, sigma)`, `[B]` (the Jacobian of the squash cancels in PPO's ratio).
    pub logp: &'a mut [f32],
    /// `V(s)`, `[B]`.
    pub value: &'a mut [f32],
}

impl ActorCritic {
    /// Builds both networks from `cfg`, drawing orthogonal weights from `rng`.
    pub fn new<R: Rng + ?Sized>(cfg: &ActorCriticConfig, rng: &mut R) -> Result<Self> {
        check_len("max_delta", cfg.max_delta.len(), cfg.act_dim)?;
        if cfg.max_delta.iter().any(|&m| m <= 0.0 || !m.is_finite()) {
            return Err(LearnError::Config(format!(
                "max_delta must be finite and positive, got {:?}",
                cfg.max_delta
            )));
        }
        let mut actor_sizes = vec![cfg.obs_dim];
        actor_sizes.extend(&cfg.hidden);
        let mut critic_sizes = actor_sizes.clone();
        actor_sizes.push(cfg.act_dim);
        critic_sizes.push(1);
        let actor = Mlp::new(
            &actor_sizes,
            MlpInit {
                hidden_gain: std::f32::consts::SQRT_2,
                output: cfg.actor_output,
            },
            rng,
        )?;
        let critic = Mlp::new(
            &critic_sizes,
            MlpInit::orthogonal(cfg.critic_output_gain),
            rng,
        )?;
        Ok(Self {
            actor,
            critic,
            log_std: vec![cfg.log_std_init; cfg.act_dim],
            log_std_grad: vec![0.0; cfg.act_dim],
            ref_log_std: vec![cfg.log_std_init; cfg.act_dim],
            max_delta: cfg.max_delta.clone(),
        })
    }

    /// Observation width.
    pub fn obs_dim(&self) -> usize {
        self.actor.in_dim()
    }
    /// Action width.
    pub fn act_dim(&self) -> usize {
        self.actor.out_dim()
    }

    /// Optimiser groups: actor params (decayed), log-std (never decayed: decay would pull it
    /// towards sigma = 1), critic params (decayed).
    pub fn param_groups(&self) -> [(usize, bool); 3] {
        [
            (self.actor.num_params(), true),
            (self.log_std.len(), false),
            (self.critic.num_params(), true),
        ]
    }

    /// Zeroes all gradients.
    pub fn zero_grad(&mut self) {
        self.actor.zero_grad();
        self.critic.zero_grad();
        self.log_std_grad.fill(0.0);
    }

    /// Global L2 clipping over actor, log-std and critic gradients; returns the pre-clip norm.
    pub fn clip_grad_norm(&mut self, max_norm: f32) -> f32 {
        clip_grad_norm(
            &mut [
                self.actor.grads_mut(),
                &mut self.log_std_grad,
                self.critic.grads_mut(),
            ],
            max_norm,
        )
    }

    /// One optimiser step on all groups, or only the critic when `actor_frozen`.
    pub fn optimizer_step(&mut self, optim: &mut AdamW, actor_frozen: bool) -> Result<()> {
        if !actor_frozen {
            let (p, g) = self.actor.params_and_grads_mut();
            optim.step_group(0, p, g)?;
            optim.step_group(1, &mut self.log_std, &self.log_std_grad)?;
        }
        let (p, g) = self.critic.params_and_grads_mut();
        optim.step_group(2, p, g)
    }

    /// Parameters with PyTorch names (CleanRL `Agent`): `actor_mean.N.weight`, `actor_logstd`
    /// (shape `[1, A]`), `critic.N.weight`, ...
    pub fn named_tensors(&self) -> Vec<TensorView<'_>> {
        self.named(
            self.actor.named_tensors(),
            &self.log_std,
            self.critic.named_tensors(),
        )
    }

    /// Gradients, named like [`ActorCritic::named_tensors`].
    pub fn named_grads(&self) -> Vec<TensorView<'_>> {
        self.named(
            self.actor.named_grads(),
            &self.log_std_grad,
            self.critic.named_grads(),
        )
    }

    fn named<'a>(
        &self,
        actor: Vec<TensorView<'a>>,
        log_std: &'a [f32],
        critic: Vec<TensorView<'a>>,
    ) -> Vec<TensorView<'a>> {
        let mut out = Vec::with_capacity(actor.len() + critic.len() + 1);
        out.extend(actor.into_iter().map(|t| TensorView {
            name: format!("actor_mean.{}", t.name),
            ..t
        }));
        out.push(TensorView {
            name: "actor_logstd".into(),
            shape: vec![1, log_std.len()],
            data: log_std,
        });
        out.extend(critic.into_iter().map(|t| TensorView {
            name: format!("critic.{}", t.name),
            ..t
        }));
        out
    }

    /// Overwrites one named tensor (names as in [`ActorCritic::named_tensors`]).
    pub fn set_tensor(&mut self, name: &str, shape: &[usize], data: &[f32]) -> Result<()> {
        if let Some(rest) = name.strip_prefix("actor_mean.") {
            self.actor.set_tensor(rest, shape, data)
        } else if let Some(rest) = name.strip_prefix("critic.") {
            self.critic.set_tensor(rest, shape, data)
        } else if name == "actor_logstd" {
            let a = self.log_std.len();
            if shape != [1, a] && shape != [a] {
                return Err(LearnError::Checkpoint(format!(
                    "tensor `actor_logstd` has shape {shape:?}, expected [1, {a}]"
                )));
            }
            check_len(name, data.len(), a)?;
            self.log_std.copy_from_slice(data);
            Ok(())
        } else {
            Err(LearnError::UnknownTensor(name.to_string()))
        }
    }

    /// Forward of actor and critic on the same observations, side by side when worth it.
    pub(crate) fn forward_both<'w>(
        actor: &Mlp,
        critic: &Mlp,
        obs: &[f32],
        wa: &'w mut MlpWorkspace,
        wc: &'w mut MlpWorkspace,
    ) -> Result<(&'w [f32], &'w [f32])> {
        let (mu, v) = if obs.len() >= PAR_MIN_FLOATS {
            rayon::join(
                move || actor.forward(obs, wa),
                move || critic.forward(obs, wc),
            )
        } else {
            (actor.forward(obs, wa), critic.forward(obs, wc))
        };
        Ok((mu?, v?))
    }

    /// Batched rollout inference on `obs` (`[B, D]`): samples `u ~ N(mu, sigma)`, squashes it
    /// to `delta`, and returns `log N(u; mu, sigma)` and `V(s)`.
    ///
    /// The noise is drawn (row-major, from `rng`) beside the critic's forward pass while the
    /// actor runs on the other thread; the draws and hence the bits do not depend on that.
    pub fn sample<R: Rng + Send + ?Sized>(
        &self,
        obs: &[f32],
        rng: &mut R,
        ws: &mut ActWorkspace,
        out: ActOutput<'_>,
    ) -> Result<()> {
        let mut out = out;
        let mu = self.forward_act(obs, ws, &mut out, |u| dist::standard_normal(rng, u))?;
        dist::reparameterize(mu, &self.log_std, out.u)?;
        self.squash_and_log_prob(mu, out)
    }

    /// [`ActorCritic::sample`] with the standard normal noise given (`eps`, `[B, A]`, e.g.
    /// drawn by a learner for workers elsewhere): a row's action then depends only on its input
    /// and its noise, not on which batch (or machine) computed it.
    pub fn sample_with_noise(
        &self,
        obs: &[f32],
        eps: &[f32],
        ws: &mut ActWorkspace,
        out: ActOutput<'_>,
    ) -> Result<()> {
        check_len("noise", eps.len(), out.u.len())?;
        let mut out = out;
        let mu = self.forward_act(obs, ws, &mut out, |u| u.copy_from_slice(eps))?;
        dist::reparameterize(mu, &self.log_std, out.u)?;
        self.squash_and_log_prob(mu, out)
    }

    /// [`ActorCritic::sample`] without noise: `u = mu` (the refined planner at evaluation).
    pub fn act_deterministic(
        &self,
        obs: &[f32],
        ws: &mut ActWorkspace,
        out: ActOutput<'_>,
    ) -> Result<()> {
        let mut out = out;
        let mu = self.forward_act(obs, ws, &mut out, |_| {})?;
        out.u.copy_from_slice(mu);
        self.squash_and_log_prob(mu, out)
    }

    /// Checks the shapes, runs actor and critic on `obs` (side by side when worth it, with
    /// `draw(u)` beside the critic), writes `V(s)` and returns `mu`.
    fn forward_act<'w>(
        &self,
        obs: &[f32],
        ws: &'w mut ActWorkspace,
        out: &mut ActOutput<'_>,
        draw: impl FnOnce(&mut [f32]) + Send,
    ) -> Result<&'w [f32]> {
        let (d, a) = (self.obs_dim(), self.act_dim());
        let b = rows_of("obs", obs.len(), d)?;
        check_len("u", out.u.len(), b * a)?;
        check_len("delta", out.delta.len(), b * a)?;
        check_len("logp", out.logp.len(), b)?;
        check_len("value", out.value.len(), b)?;
        let ActWorkspace {
            actor: wa,
            critic: wc,
        } = ws;
        let (actor, critic) = (&self.actor, &self.critic);
        let u = &mut *out.u;
        let (mu, v) = if obs.len() >= PAR_MIN_FLOATS {
            let (mu, v) = rayon::join(
                || actor.infer(obs, wa),
                || {
                    let v = critic.infer(obs, wc);
                    draw(u);
                    v
                },
            );
            (mu?, v?)
        } else {
            let (mu, v) = (actor.infer(obs, wa)?, critic.infer(obs, wc)?);
            draw(u);
            (mu, v)
        };
        out.value.copy_from_slice(v);
        Ok(mu)
    }

    /// `delta = max_delta * tanh(u)` and `log N(u; mu, sigma)` into `out`.
    fn squash_and_log_prob(&self, mu: &[f32], out: ActOutput<'_>) -> Result<()> {
        dist::squash(out.u, &self.max_delta, out.delta)?;
        dist::gaussian_log_prob(out.u, mu, &self.log_std, out.logp)
    }

    /// `V(s)` for a batch (e.g. bootstrap values of final observations on truncation).
    pub fn value(&self, obs: &[f32], ws: &mut ActWorkspace, out: &mut [f32]) -> Result<()> {
        let b = rows_of("obs", obs.len(), self.obs_dim())?;
        check_len("value", out.len(), b)?;
        out.copy_from_slice(self.critic.infer(obs, &mut ws.critic)?);
        Ok(())
    }
}
