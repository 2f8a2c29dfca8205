//! The residual action distribution: a tanh-squashed diagonal Gaussian.
//!
//! Choice and why:
//! - The policy samples a pre-squash variable `u ~ N(mu(s), sigma)` per action dimension, with a
//!   state-independent learned `log_std` (one per dimension, CleanRL/ResiP practice, initialised to
//!   `refine.log_std_init`, default `DEFAULT_LOG_STD_INIT` = -1.0 in the PPO module).
//! - The executed correction is `delta = max_delta * tanh(u)`, so `|delta| <= max_delta` per
//!   coordinate always: the residual stays bounded without clipping inside the agent, which would
//!   break log-probabilities (references.md).
//! - The rollout stores `u`, so the density of the executed action is exact:
//!   `log p(delta) = log N(u; mu, sigma) - sum_j log(max_delta_j * (1 - tanh(u_j)^2))`, with
//!   `log(1 - tanh^2 u) = 2 (ln 2 - u - softplus(-2u))` for stability at large `|u|`.
//! - The Jacobian term depends only on `u`, so it cancels in PPO's ratio:
//!   `ratio = exp(log N_new(u) - log N_old(u))`. PPO therefore works with the Gaussian log-density
//!   of `u` throughout ([`gaussian_log_prob`]); [`squashed_log_prob`] gives the density of `delta`.
//! - Deterministic action: `max_delta * tanh(mu)`, which is exactly 0 when `mu = 0` (iteration-0
//!   identity with a zero-initialised output layer: the refined planner equals the SFT planner).
//! - Entropy: we report and regularise the Gaussian entropy of `u` (closed form, state
//!   independent). The entropy of the squashed `delta` has no closed form; it differs from the
//!   Gaussian one by `E[log |d delta / du|]`.
//! - KL to the SFT reference policy: the reference is `N(0, sigma_ref)` in `u` space (its
//!   deterministic action is delta = 0, its exploration `sigma_ref = exp(log_std_init)`). Because
//!   `tanh` scaled by `max_delta` is a bijection, the KL between the squashed distributions equals
//!   the Gaussian KL in `u` space, which has a closed form with analytic gradients.
//!
//! All functions are batched over `[B, A]` row-major buffers with per-dimension `[A]` vectors.

use rand::Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::error::{check_len, rows_of, Result};
use crate::nn::fast_tanh;

/// `0.5 * ln(2 pi)`.
pub const HALF_LOG_2PI: f32 = 0.918_938_5;

/// Numerically stable `ln(1 + e^x)`.
#[inline]
pub fn softplus(x: f32) -> f32 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// `ln(1 - tanh(u)^2)`, stable for any `u`.
#[inline]
pub fn log_one_minus_tanh_sq(u: f32) -> f32 {
    2.0 * (std::f32::consts::LN_2 - u - softplus(-2.0 * u))
}

/// Runs `f` on a per-dimension scratch vector of length `a`, on the stack when `a <= 128`, so the
/// batched functions below allocate nothing in a training loop.
fn with_dim_scratch<T>(a: usize, init: impl Fn(usize) -> f32, f: impl FnOnce(&[f32]) -> T) -> T {
    const STACK: usize = 128;
    if a <= STACK {
        let mut buf = [0.0f32; STACK];
        buf[..a]
            .iter_mut()
            .enumerate()
            .for_each(|(j, v)| *v = init(j));
        f(&buf[..a])
    } else {
        let v: Vec<f32> = (0..a).map(init).collect();
        f(&v)
    }
}

fn check_rows(name: &str, len: usize, act_dim: usize, rows: usize) -> Result<()> {
    check_len(name, len, rows * act_dim)
}

/// `out[i] = sum_j log N(u[i,j]; mu[i,j], exp(log_std[j]))`.
pub fn gaussian_log_prob(u: &[f32], mu: &[f32], log_std: &[f32], out: &mut [f32]) -> Result<()> {
    let a = log_std.len();
    let b = rows_of("mu", mu.len(), a)?;
    check_rows("u", u.len(), a, b)?;
    check_len("log_prob out", out.len(), b)?;
    let norm: f32 = log_std.iter().sum::<f32>() + a as f32 * HALF_LOG_2PI;
    with_dim_scratch(
        a,
        |j| (-log_std[j]).exp(),
        |inv_std| {
            for ((o, ur), mr) in out
                .iter_mut()
                .zip(u.chunks_exact(a))
                .zip(mu.chunks_exact(a))
            {
                let mut q = 0.0f32;
                for ((&uj, &mj), &is) in ur.iter().zip(mr).zip(inv_std) {
                    let z = (uj - mj) * is;
                    q += z * z;
                }
                *o = -0.5 * q - norm;
            }
        },
    );
    Ok(())
}

/// Backward of [`gaussian_log_prob`]: given `dlogp[i]` = dL/dlogp_i, accumulates
/// `dmu[i,j] += dlogp_i * z_ij / sigma_j` and `dlog_std[j] += sum_i dlogp_i * (z_ij^2 - 1)`,
/// where `z = (u - mu) / sigma`.
pub fn gaussian_log_prob_backward(
    u: &[f32],
    mu: &[f32],
    log_std: &[f32],
    dlogp: &[f32],
    dmu: &mut [f32],
    dlog_std: &mut [f32],
) -> Result<()> {
    let a = log_std.len();
    let b = rows_of("mu", mu.len(), a)?;
    check_rows("u", u.len(), a, b)?;
    check_rows("dmu", dmu.len(), a, b)?;
    check_len("dlogp", dlogp.len(), b)?;
    check_len("dlog_std", dlog_std.len(), a)?;
    with_dim_scratch(
        a,
        |j| (-log_std[j]).exp(),
        |inv_std| {
            for (((&g, ur), mr), dr) in dlogp
                .iter()
                .zip(u.chunks_exact(a))
                .zip(mu.chunks_exact(a))
                .zip(dmu.chunks_exact_mut(a))
            {
                for ((((&uj, &mj), &is), dm), ds) in ur
                    .iter()
                    .zip(mr)
                    .zip(inv_std)
                    .zip(dr.iter_mut())
                    .zip(dlog_std.iter_mut())
                {
                    let z = (uj - mj) * is;
                    *dm += g * z * is;
                    *ds += g * (z * z - 1.0);
                }
            }
        },
    );
    Ok(())
}

/// Executed correction `delta = max_delta * tanh(u)` (per dimension `max_delta[j]`).
pub fn squash(u: &[f32], max_delta: &[f32], delta: &mut [f32]) -> Result<()> {
    let a = max_delta.len();
    let b = rows_of("u", u.len(), a)?;
    check_rows("delta", delta.len(), a, b)?;
    for (dr, ur) in delta.chunks_exact_mut(a).zip(u.chunks_exact(a)) {
        for ((d, &uj), &m) in dr.iter_mut().zip(ur).zip(max_delta) {
            *d = m * fast_tanh(uj);
        }
    }
    Ok(())
}

/// `out[i] = sum_j ln |d delta_ij / d u_ij| = sum_j ln(max_delta_j (1 - tanh(u_ij)^2))`.
pub fn log_abs_det_jacobian(u: &[f32], max_delta: &[f32], out: &mut [f32]) -> Result<()> {
    let a = max_delta.len();
    let b = rows_of("u", u.len(), a)?;
    check_len("log_det out", out.len(), b)?;
    let log_scale: f32 = max_delta.iter().map(|m| m.ln()).sum();
    for (o, ur) in out.iter_mut().zip(u.chunks_exact(a)) {
        *o = log_scale + ur.iter().map(|&x| log_one_minus_tanh_sq(x)).sum::<f32>();
    }
    Ok(())
}

/// Exact log-density of the executed `delta = max_delta * tanh(u)` (change of variables).
pub fn squashed_log_prob(
    u: &[f32],
    mu: &[f32],
    log_std: &[f32],
    max_delta: &[f32],
    out: &mut [f32],
) -> Result<()> {
    let a = log_std.len();
    check_len("max_delta", max_delta.len(), a)?;
    gaussian_log_prob(u, mu, log_std, out)?;
    let log_scale: f32 = max_delta.iter().map(|m| m.ln()).sum();
    for (o, ur) in out.iter_mut().zip(u.chunks_exact(a)) {
        *o -= log_scale + ur.iter().map(|&x| log_one_minus_tanh_sq(x)).sum::<f32>();
    }
    Ok(())
}

/// Gaussian entropy of `u` per sample, `sum_j (0.5 + 0.5 ln 2pi + log_std_j)`; its gradient
/// w.r.t. each `log_std_j` is 1.
pub fn entropy(log_std: &[f32]) -> f32 {
    log_std.iter().map(|s| 0.5 + HALF_LOG_2PI + s).sum()
}

/// `out[i] = KL(N(mu_i, sigma) || N(0, sigma_ref))`, summed over dimensions:
/// `sum_j ln(sigma_ref/sigma) + (sigma^2 + mu^2) / (2 sigma_ref^2) - 1/2`.
pub fn kl_to_reference(
    mu: &[f32],
    log_std: &[f32],
    ref_log_std: &[f32],
    out: &mut [f32],
) -> Result<()> {
    let a = log_std.len();
    check_len("ref_log_std", ref_log_std.len(), a)?;
    let b = rows_of("mu", mu.len(), a)?;
    check_len("kl out", out.len(), b)?;
    // Per-dimension constant part and 1 / (2 sigma_ref^2).
    let half_inv_ref_var = |j: usize| 0.5 * (-2.0 * ref_log_std[j]).exp();
    with_dim_scratch(a, half_inv_ref_var, |h| {
        let mut constant = 0.0f32;
        for ((&s, &r), &hj) in log_std.iter().zip(ref_log_std).zip(h) {
            constant += r - s + (2.0 * s).exp() * hj - 0.5;
        }
        for (o, mr) in out.iter_mut().zip(mu.chunks_exact(a)) {
            *o = constant + mr.iter().zip(h).map(|(&m, &hj)| m * m * hj).sum::<f32>();
        }
    });
    Ok(())
}

/// Backward of [`kl_to_reference`]: accumulates `dmu[i,j] += dkl_i * mu_ij / sigma_ref_j^2` and
/// `dlog_std[j] += sum_i dkl_i * (sigma_j^2 / sigma_ref_j^2 - 1)`.
pub fn kl_to_reference_backward(
    mu: &[f32],
    log_std: &[f32],
    ref_log_std: &[f32],
    dkl: &[f32],
    dmu: &mut [f32],
    dlog_std: &mut [f32],
) -> Result<()> {
    let a = log_std.len();
    check_len("ref_log_std", ref_log_std.len(), a)?;
    let b = rows_of("mu", mu.len(), a)?;
    check_len("dkl", dkl.len(), b)?;
    check_rows("dmu", dmu.len(), a, b)?;
    check_len("dlog_std", dlog_std.len(), a)?;
    let sum_dkl: f32 = dkl.iter().sum();
    with_dim_scratch(
        a,
        |j| (-2.0 * ref_log_std[j]).exp(),
        |inv_ref_var| {
            for ((ds, &s), &iv) in dlog_std.iter_mut().zip(log_std).zip(inv_ref_var) {
                *ds += sum_dkl * ((2.0 * s).exp() * iv - 1.0);
            }
            for ((&g, mr), dr) in dkl
                .iter()
                .zip(mu.chunks_exact(a))
                .zip(dmu.chunks_exact_mut(a))
            {
                for ((d, &m), &iv) in dr.iter_mut().zip(mr).zip(inv_ref_var) {
                    *d += g * m * iv;
                }
            }
        },
    );
    Ok(())
}

/// Fills `eps` with independent N(0, 1) draws in order (deterministic for a given RNG state).
pub fn standard_normal<R: Rng + ?Sized>(rng: &mut R, eps: &mut [f32]) {
    for e in eps.iter_mut() {
        *e = StandardNormal.sample(rng);
    }
}

/// In place `u[i,j] = mu[i,j] + exp(log_std[j]) * u[i,j]`: turns standard normal noise into a
/// sample of the policy (split from the draw so the draw can overlap the forward pass).
pub fn reparameterize(mu: &[f32], log_std: &[f32], u: &mut [f32]) -> Result<()> {
    let a = log_std.len();
    let b = rows_of("mu", mu.len(), a)?;
    check_rows("u", u.len(), a, b)?;
    with_dim_scratch(
        a,
        |j| log_std[j].exp(),
        |std| {
            for (ur, mr) in u.chunks_exact_mut(a).zip(mu.chunks_exact(a)) {
                for ((x, &m), &s) in ur.iter_mut().zip(mr).zip(std) {
                    *x = m + s * *x;
                }
            }
        },
    );
    Ok(())
}

/// Samples `u = mu + sigma * eps`, `eps ~ N(0, 1)` drawn in row-major order (deterministic for a
/// given RNG state).
pub fn sample<R: Rng + ?Sized>(
    mu: &[f32],
    log_std: &[f32],
    rng: &mut R,
    u: &mut [f32],
) -> Result<()> {
    let a = log_std.len();
    let b = rows_of("mu", mu.len(), a)?;
    check_rows("u", u.len(), a, b)?;
    standard_normal(rng, u);
    reparameterize(mu, log_std, u)
}
