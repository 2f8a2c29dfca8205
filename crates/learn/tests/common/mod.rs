//! Independent float64 references used by the tests: plain loops over the documented PyTorch
//! parameter layout and the PPO formulas written out, with libm tanh/exp/ln.
#![allow(dead_code)]

use std::f64::consts::PI;

/// Forward of a tanh MLP in f64 (`params` in PyTorch layout: per layer weight [out, in], bias).
pub fn mlp_forward_f64(sizes: &[usize], params: &[f64], x: &[f64]) -> Vec<f64> {
    let b = x.len() / sizes[0];
    let mut cur = x.to_vec();
    let mut off = 0;
    let n_layers = sizes.len() - 1;
    for l in 0..n_layers {
        let (ni, no) = (sizes[l], sizes[l + 1]);
        let w = &params[off..off + ni * no];
        let bias = &params[off + ni * no..off + ni * no + no];
        off += ni * no + no;
        let mut next = vec![0.0; b * no];
        for r in 0..b {
            for j in 0..no {
                let mut s = bias[j];
                for k in 0..ni {
                    s += w[j * ni + k] * cur[r * ni + k];
                }
                next[r * no + j] = if l + 1 < n_layers { s.tanh() } else { s };
            }
        }
        cur = next;
    }
    cur
}

pub fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x)).collect()
}

/// Central finite differences of `f` at `x` (step `h`).
pub fn central_diff(x: &[f64], h: f64, mut f: impl FnMut(&[f64]) -> f64) -> Vec<f64> {
    let mut x = x.to_vec();
    (0..x.len())
        .map(|k| {
            let orig = x[k];
            x[k] = orig + h;
            let plus = f(&x);
            x[k] = orig - h;
            let minus = f(&x);
            x[k] = orig;
            (plus - minus) / (2.0 * h)
        })
        .collect()
}

/// Asserts `|got - want| <= atol + rtol * |want|` elementwise; returns the max abs difference.
pub fn assert_grad_close(what: &str, got: &[f32], want: &[f64], atol: f64, rtol: f64) -> f64 {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut max = 0.0f64;
    for (k, (&g, &w)) in got.iter().zip(want).enumerate() {
        let diff = (f64::from(g) - w).abs();
        assert!(
            diff <= atol + rtol * w.abs(),
            "{what}[{k}]: analytic {g} vs finite difference {w} (diff {diff:e})"
        );
        max = max.max(diff);
    }
    max
}

pub fn gaussian_logp_f64(u: &[f64], mu: &[f64], log_std: &[f64]) -> f64 {
    u.iter()
        .zip(mu)
        .zip(log_std)
        .map(|((&u, &m), &s)| {
            let z = (u - m) / s.exp();
            -0.5 * z * z - s - 0.5 * (2.0 * PI).ln()
        })
        .sum()
}

pub struct RefBatch {
    pub obs: Vec<f64>,
    pub u: Vec<f64>,
    pub old_logp: Vec<f64>,
    pub adv: Vec<f64>,
    pub ret: Vec<f64>,
    pub old_v: Vec<f64>,
    /// The expert's corrections in units of `max_delta` (`[B, A]`), or empty.
    pub expert: Vec<f64>,
}

pub struct RefCfg {
    pub clip: f64,
    pub vf_coef: f64,
    pub ent_coef: f64,
    pub beta: f64,
    pub clip_vloss: bool,
    pub norm_adv: bool,
    pub expert_coef: f64,
}

/// PPO loss terms in f64: [loss, pg, v, entropy, kl_sft, approx_kl, old_approx_kl, clip_frac,
/// expert_loss].
#[allow(clippy::too_many_arguments)]
pub fn ppo_loss_f64(
    actor_sizes: &[usize],
    actor_p: &[f64],
    log_std: &[f64],
    critic_sizes: &[usize],
    critic_p: &[f64],
    ref_log_std: &[f64],
    mb: &RefBatch,
    cfg: &RefCfg,
) -> [f64; 9] {
    let a = log_std.len();
    let b = mb.adv.len();
    let bf = b as f64;
    let mu = mlp_forward_f64(actor_sizes, actor_p, &mb.obs);
    let v = mlp_forward_f64(critic_sizes, critic_p, &mb.obs);
    let adv: Vec<f64> = if cfg.norm_adv {
        let mean = mb.adv.iter().sum::<f64>() / bf;
        let std = (mb.adv.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (bf - 1.0)).sqrt();
        mb.adv.iter().map(|x| (x - mean) / (std + 1e-8)).collect()
    } else {
        mb.adv.clone()
    };
    let (mut pg, mut vl, mut kl, mut k3, mut k1, mut cf) = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    for i in 0..b {
        let mu_i = &mu[i * a..(i + 1) * a];
        let logp = gaussian_logp_f64(&mb.u[i * a..(i + 1) * a], mu_i, log_std);
        let logr = logp - mb.old_logp[i];
        let r = logr.exp();
        pg += f64::max(
            -adv[i] * r,
            -adv[i] * r.clamp(1.0 - cfg.clip, 1.0 + cfg.clip),
        );
        k3 += (r - 1.0) - logr;
        k1 += -logr;
        cf += f64::from(u8::from((r - 1.0).abs() > cfg.clip));
        let unclipped = (v[i] - mb.ret[i]).powi(2);
        vl += if cfg.clip_vloss {
            let vc = mb.old_v[i] + (v[i] - mb.old_v[i]).clamp(-cfg.clip, cfg.clip);
            unclipped.max((vc - mb.ret[i]).powi(2))
        } else {
            unclipped
        };
        for j in 0..a {
            let (s, r_) = (log_std[j], ref_log_std[j]);
            kl += r_ - s + ((2.0 * s).exp() + mu_i[j] * mu_i[j]) / (2.0 * (2.0 * r_).exp()) - 0.5;
        }
    }
    let expert = if mb.expert.is_empty() {
        0.0
    } else {
        mu.iter()
            .zip(&mb.expert)
            .map(|(m, c)| (m.tanh() - c).powi(2))
            .sum::<f64>()
            / (bf * a as f64)
    };
    let ent: f64 = log_std
        .iter()
        .map(|s| 0.5 + 0.5 * (2.0 * PI).ln() + s)
        .sum();
    let (pg, vl, kl) = (pg / bf, 0.5 * vl / bf, kl / bf);
    [
        pg - cfg.ent_coef * ent + cfg.vf_coef * vl + cfg.beta * kl + cfg.expert_coef * expert,
        pg,
        vl,
        ent,
        kl,
        k3 / bf,
        k1 / bf,
        cf / bf,
        expert,
    ]
}
