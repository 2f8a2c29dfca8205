//! AdamW and global gradient-norm clipping with PyTorch semantics over flat buffers.
//!
//! Parameters are organised in groups (one flat slice each, e.g. actor MLP, log-std, critic MLP).
//! Each group keeps its own step count, like PyTorch's per-parameter `state["step"]`, so a group
//! that is skipped (critic warm-up freezes the actor) does not advance its bias correction.

use serde::{Deserialize, Serialize};

use crate::error::{check_len, LearnError, Result};
use crate::simd::multiversion;

/// AdamW hyper-parameters (PyTorch names; `eps` defaults to CleanRL's 1e-5, not PyTorch's 1e-8).
/// Kept in f64 like PyTorch's Python floats, so derived scalars (`1 - beta1`, ...) round alike.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    /// Learning rate (may be changed between steps, e.g. by linear annealing).
    pub lr: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Added to the bias-corrected sqrt of the second moment.
    pub eps: f64,
    /// Decoupled weight decay: `p -= lr * weight_decay * p` before the Adam step (only groups
    /// created with `decay = true`).
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            lr: 3e-4,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-5,
            weight_decay: 0.0,
        }
    }
}

/// State of one parameter group: step count and first/second moments (same layout as params).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamWGroup {
    /// Whether weight decay applies to this group (off for e.g. log-std).
    pub decay: bool,
    /// Number of steps taken on this group.
    pub step: u64,
    /// First moment `m`.
    pub exp_avg: Vec<f32>,
    /// Second moment `v`.
    pub exp_avg_sq: Vec<f32>,
}

/// AdamW optimiser (PyTorch `torch.optim.AdamW`, single-tensor path, `amsgrad=False`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamW {
    /// Hyper-parameters.
    pub cfg: AdamWConfig,
    /// Per-group state.
    pub groups: Vec<AdamWGroup>,
}

impl AdamW {
    /// One group per `(len, decay)` pair.
    pub fn new(cfg: AdamWConfig, groups: &[(usize, bool)]) -> Self {
        Self {
            cfg,
            groups: groups
                .iter()
                .map(|&(len, decay)| AdamWGroup {
                    decay,
                    step: 0,
                    exp_avg: vec![0.0; len],
                    exp_avg_sq: vec![0.0; len],
                })
                .collect(),
        }
    }

    /// Sets the learning rate used by the next steps.
    pub fn set_lr(&mut self, lr: f64) {
        self.cfg.lr = lr;
    }

    /// One step on every group: `params[g]` updated from `grads[g]`.
    pub fn step(&mut self, params: &mut [&mut [f32]], grads: &[&[f32]]) -> Result<()> {
        check_len("adamw param groups", params.len(), self.groups.len())?;
        check_len("adamw grad groups", grads.len(), self.groups.len())?;
        for (g, (p, d)) in params.iter_mut().zip(grads).enumerate() {
            self.step_group(g, p, d)?;
        }
        Ok(())
    }

    /// One step on group `group` only (the others keep their state and step count).
    pub fn step_group(&mut self, group: usize, params: &mut [f32], grads: &[f32]) -> Result<()> {
        let cfg = self.cfg;
        let n_groups = self.groups.len();
        let state = self.groups.get_mut(group).ok_or_else(|| {
            LearnError::Config(format!(
                "adamw group {group} out of range ({n_groups} groups)"
            ))
        })?;
        check_len("adamw params", params.len(), state.exp_avg.len())?;
        check_len("adamw grads", grads.len(), state.exp_avg.len())?;
        state.step += 1;
        // Scalars in f64 then rounded once, as PyTorch does with its Python-float step.
        let lr = cfg.lr;
        let step = state.step as f64;
        let bias_correction1 = 1.0 - cfg.beta1.powf(step);
        let bias_correction2 = 1.0 - cfg.beta2.powf(step);
        let step_size = (lr / bias_correction1) as f32;
        let bc2_sqrt = bias_correction2.sqrt() as f32;
        // Multiplying by exactly 1.0 (no decay) leaves every bit unchanged.
        let decay = if state.decay {
            (1.0 - lr * cfg.weight_decay) as f32
        } else {
            1.0
        };
        let scalars = AdamScalars {
            decay,
            w1: (1.0 - cfg.beta1) as f32, // lerp weight of exp_avg towards grad
            w2: (1.0 - cfg.beta2) as f32,
            beta2: cfg.beta2 as f32,
            eps: cfg.eps as f32,
            bc2_sqrt,
            step_size,
        };
        adamw_kernel(
            params,
            grads,
            &mut state.exp_avg,
            &mut state.exp_avg_sq,
            &scalars,
        );
        Ok(())
    }
}

/// Per-step scalars of the AdamW update, rounded to f32 as PyTorch does.
struct AdamScalars {
    decay: f32,
    w1: f32,
    w2: f32,
    beta2: f32,
    eps: f32,
    bc2_sqrt: f32,
    step_size: f32,
}

multiversion! {
    /// The fused elementwise AdamW update (PyTorch single-tensor path, same operation order).
    fn adamw_kernel(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], k: &AdamScalars) {
        for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
            *p *= k.decay; // p.mul_(1 - lr * weight_decay)
            *m += k.w1 * (g - *m); // exp_avg.lerp_(grad, 1 - beta1)
            *v = *v * k.beta2 + k.w2 * g * g; // exp_avg_sq.mul_(beta2).addcmul_(g, g, 1 - beta2)
            let denom = v.sqrt() / k.bc2_sqrt + k.eps;
            *p += -k.step_size * (*m / denom); // p.addcdiv_(exp_avg, denom, -step_size)
        }
    }
}

multiversion! {
    /// `sum x^2` in f64 over 8 fixed lanes then a fixed-order reduction: vectorisable and
    /// deterministic.
    fn sum_sq_f64(xs: &[f32]) -> f64 {
        let mut acc = [0.0f64; 8];
        let chunks = xs.chunks_exact(8);
        let rest = chunks.remainder();
        for c in chunks {
            for (a, &x) in acc.iter_mut().zip(c) {
                *a += f64::from(x) * f64::from(x);
            }
        }
        acc.iter().sum::<f64>() + rest.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>()
    }
}

multiversion! {
    fn scale_inplace(xs: &mut [f32], coef: f32) {
        xs.iter_mut().for_each(|x| *x *= coef);
    }
}

/// Global gradient-norm clipping over several buffers (PyTorch `clip_grad_norm_`, L2).
///
/// `total = sqrt(sum g^2)` over all buffers (accumulated in f64, rounded to f32 once), then every
/// gradient is scaled by `min(1, max_norm / (total + 1e-6))`. Returns the pre-clip norm.
pub fn clip_grad_norm(grads: &mut [&mut [f32]], max_norm: f32) -> f32 {
    let sum_sq: f64 = grads.iter().map(|g| sum_sq_f64(g)).sum();
    let total = sum_sq.sqrt() as f32;
    let coef = max_norm / (total + 1e-6);
    if coef < 1.0 {
        for g in grads.iter_mut() {
            scale_inplace(g, coef);
        }
    }
    total
}
