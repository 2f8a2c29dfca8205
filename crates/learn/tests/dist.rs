//! Squashed Gaussian: exact log-probs vs a direct change of variables, KL closed form vs Monte
//! Carlo, entropy vs Monte Carlo, analytic backward vs finite differences, bounds.

mod common;

use common::{assert_grad_close, central_diff, gaussian_logp_f64, to_f64};
use deltaplan_learn::dist::{
    entropy, gaussian_log_prob, gaussian_log_prob_backward, kl_to_reference,
    kl_to_reference_backward, log_one_minus_tanh_sq, sample, squash, squashed_log_prob,
};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

fn rng(seed: u64) -> rand_pcg::Pcg64 {
    rand_pcg::Pcg64::seed_from_u64(seed)
}

/// log p(delta) from the density of u and a numerical derivative of u(delta) = atanh(delta / m):
/// p_delta(delta) = p_u(u(delta)) |du/ddelta|. Independent of the closed-form Jacobian.
#[test]
fn squashed_log_prob_matches_change_of_variables() {
    let mu = [0.3f32, -0.7, 1.1];
    let log_std = [-0.5f32, -1.0, 0.2];
    let max_delta = [0.5f32, 2.0, 1.0];
    let u = [0.1f32, -2.5, 2.9, -0.4, 0.0, 1.7];
    let mut got = [0.0f32; 2];
    squashed_log_prob(&u, &[mu, mu].concat(), &log_std, &max_delta, &mut got).unwrap();
    for (i, &g) in got.iter().enumerate() {
        let ui = to_f64(&u[i * 3..(i + 1) * 3]);
        let mut want = gaussian_logp_f64(&ui, &to_f64(&mu), &to_f64(&log_std));
        for (j, &uj) in ui.iter().enumerate() {
            let m = f64::from(max_delta[j]);
            let delta = m * uj.tanh();
            let h = 1e-7 * m;
            let du_ddelta = (((delta + h) / m).atanh() - ((delta - h) / m).atanh()) / (2.0 * h);
            want += du_ddelta.ln();
        }
        assert!(
            (f64::from(g) - want).abs() < 2e-4,
            "sample {i}: {g} vs {want}"
        );
    }
}

#[test]
fn log_one_minus_tanh_sq_is_stable_at_large_u() {
    for u in [-30.0f32, -12.0, -3.0, 0.0, 0.5, 3.0, 12.0, 30.0] {
        let uf = f64::from(u);
        // ln(sech^2 u) = ln 4 - 2|u| - 2 ln(1 + e^{-2|u|}).
        let want = 4f64.ln() - 2.0 * uf.abs() - 2.0 * (-2.0 * uf.abs()).exp().ln_1p();
        let got = f64::from(log_one_minus_tanh_sq(u));
        assert!(got.is_finite());
        assert!(
            (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
            "u={u}: {got} vs {want}"
        );
    }
}

#[test]
fn squash_is_bounded_and_zero_at_zero() {
    let max_delta = [0.5f32, 2.0];
    let u = [0.0f32, -0.0, 1e3, -1e3, f32::INFINITY, -7.0];
    let mut d = [1.0f32; 6];
    squash(&u, &max_delta, &mut d).unwrap();
    assert_eq!(d[0], 0.0);
    assert_eq!(d[1], 0.0);
    for (k, &v) in d.iter().enumerate() {
        assert!(v.abs() <= max_delta[k % 2], "{v}");
    }
    assert_eq!(d[2], 0.5);
    assert_eq!(d[3], -2.0);
}

/// KL(N(mu, s) || N(0, s_ref)) closed form vs a Monte Carlo estimate of
/// E_u[log pi(delta) - log pi_ref(delta)] using the squashed densities (the Jacobians cancel,
/// which is the claim that the squashed KL equals the Gaussian one).
#[test]
fn kl_closed_form_matches_monte_carlo_of_squashed_densities() {
    let mu = [0.4f32, -0.2, 0.05];
    let log_std = [-1.0f32, -0.3, -2.0];
    let ref_log_std = [-0.8f32, -0.8, -1.5];
    let max_delta = [0.5f32, 0.5, 0.3];
    let mut kl = [0.0f32];
    kl_to_reference(&mu, &log_std, &ref_log_std, &mut kl).unwrap();

    let n = 100_000;
    let mut r = rng(42);
    let mut u = vec![0.0f32; n * 3];
    let mus: Vec<f32> = mu.iter().copied().cycle().take(n * 3).collect();
    sample(&mus, &log_std, &mut r, &mut u).unwrap();
    let (mut lp, mut lq) = (vec![0.0f32; n], vec![0.0f32; n]);
    squashed_log_prob(&u, &mus, &log_std, &max_delta, &mut lp).unwrap();
    squashed_log_prob(&u, &vec![0.0; n * 3], &ref_log_std, &max_delta, &mut lq).unwrap();
    let diffs: Vec<f64> = lp.iter().zip(&lq).map(|(p, q)| f64::from(p - q)).collect();
    let mean = diffs.iter().sum::<f64>() / n as f64;
    let sd = (diffs.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / n as f64).sqrt();
    let se = sd / (n as f64).sqrt();
    println!("KL closed form {} vs Monte Carlo {mean} (se {se})", kl[0]);
    assert!((f64::from(kl[0]) - mean).abs() < 4.0 * se + 1e-3);
}

#[test]
fn entropy_matches_monte_carlo() {
    let log_std = [-1.0f32, 0.3];
    let mu = [0.2f32, -0.1];
    let n = 100_000;
    let mus: Vec<f32> = mu.iter().copied().cycle().take(n * 2).collect();
    let mut u = vec![0.0f32; n * 2];
    sample(&mus, &log_std, &mut rng(3), &mut u).unwrap();
    let mut lp = vec![0.0f32; n];
    gaussian_log_prob(&u, &mus, &log_std, &mut lp).unwrap();
    let mc = -lp.iter().map(|&x| f64::from(x)).sum::<f64>() / n as f64;
    assert!(
        (f64::from(entropy(&log_std)) - mc).abs() < 0.02,
        "{} vs {mc}",
        entropy(&log_std)
    );
    // Sample moments.
    let m0 = u.iter().step_by(2).map(|&x| f64::from(x)).sum::<f64>() / n as f64;
    assert!((m0 - 0.2).abs() < 0.01);
}

/// Analytic backward of the Gaussian log-prob and of the KL vs f64 central differences.
#[test]
fn log_prob_and_kl_backward_match_finite_differences() {
    let (b, a) = (3, 2);
    let mut r = rng(9);
    let mut draw = |n: usize, s: f64| -> Vec<f32> {
        (0..n)
            .map(|_| {
                let x: f64 = StandardNormal.sample(&mut r);
                (s * x) as f32
            })
            .collect()
    };
    let (u, mu, log_std, ref_ls) = (
        draw(b * a, 1.0),
        draw(b * a, 0.5),
        draw(a, 0.3),
        draw(a, 0.3),
    );
    let w = draw(b, 1.0); // L = sum_i w_i f_i
    let (mut dmu, mut dls) = (vec![0.0f32; b * a], vec![0.0f32; a]);
    gaussian_log_prob_backward(&u, &mu, &log_std, &w, &mut dmu, &mut dls).unwrap();
    let (u64_, w64) = (to_f64(&u), to_f64(&w));
    let logp_sum = |mu: &[f64], ls: &[f64]| -> f64 {
        (0..b)
            .map(|i| {
                w64[i] * gaussian_logp_f64(&u64_[i * a..(i + 1) * a], &mu[i * a..(i + 1) * a], ls)
            })
            .sum()
    };
    let (mu64, ls64) = (to_f64(&mu), to_f64(&log_std));
    assert_grad_close(
        "logp dmu",
        &dmu,
        &central_diff(&mu64, 1e-6, |m| logp_sum(m, &ls64)),
        1e-4,
        1e-4,
    );
    assert_grad_close(
        "logp dlog_std",
        &dls,
        &central_diff(&ls64, 1e-6, |s| logp_sum(&mu64, s)),
        1e-4,
        1e-4,
    );

    let ref64 = to_f64(&ref_ls);
    let kl_sum = |mu: &[f64], ls: &[f64]| -> f64 {
        (0..b)
            .map(|i| {
                w64[i]
                    * (0..a)
                        .map(|j| {
                            let (m, s, r) = (mu[i * a + j], ls[j], ref64[j]);
                            r - s + ((2.0 * s).exp() + m * m) / (2.0 * (2.0 * r).exp()) - 0.5
                        })
                        .sum::<f64>()
            })
            .sum()
    };
    let mut kl = vec![0.0f32; b];
    kl_to_reference(&mu, &log_std, &ref_ls, &mut kl).unwrap();
    for i in 0..b {
        let single: f64 = (0..a)
            .map(|j| {
                let (m, s, r) = (mu64[i * a + j], ls64[j], ref64[j]);
                r - s + ((2.0 * s).exp() + m * m) / (2.0 * (2.0 * r).exp()) - 0.5
            })
            .sum();
        assert!((f64::from(kl[i]) - single).abs() < 1e-5);
    }
    let (mut dmu, mut dls) = (vec![0.0f32; b * a], vec![0.0f32; a]);
    kl_to_reference_backward(&mu, &log_std, &ref_ls, &w, &mut dmu, &mut dls).unwrap();
    assert_grad_close(
        "kl dmu",
        &dmu,
        &central_diff(&mu64, 1e-6, |m| kl_sum(m, &ls64)),
        1e-4,
        1e-4,
    );
    assert_grad_close(
        "kl dlog_std",
        &dls,
        &central_diff(&ls64, 1e-6, |s| kl_sum(&mu64, s)),
        1e-4,
        1e-4,
    );
    // KL is zero against itself.
    let mut self_kl = vec![1.0f32; b];
    kl_to_reference(&vec![0.0; b * a], &ref_ls, &ref_ls, &mut self_kl).unwrap();
    assert!(self_kl.iter().all(|&k| k.abs() < 1e-6));
}

#[test]
fn sampling_is_deterministic_for_a_seed() {
    let mu = vec![0.0f32; 12];
    let ls = [-1.0f32, -2.0, 0.0];
    let (mut a, mut b) = (vec![0.0f32; 12], vec![0.0f32; 12]);
    sample(&mu, &ls, &mut rng(5), &mut a).unwrap();
    sample(&mu, &ls, &mut rng(5), &mut b).unwrap();
    assert_eq!(a, b);
    assert!(sample(&mu, &ls, &mut rng(5), &mut [0.0; 11]).is_err());
}
