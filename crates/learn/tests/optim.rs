//! AdamW against hand-computed steps (PyTorch formulas), group skipping, state round trip, and
//! global gradient-norm clipping.

use deltaplan_learn::{clip_grad_norm, AdamW, AdamWConfig};

/// Two AdamW steps on two scalars, expected values from the PyTorch AdamW update written out
/// in f64: p *= 1 - lr*wd; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
/// p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps).
#[test]
fn two_steps_match_hand_computation() {
    let cfg = AdamWConfig {
        lr: 0.1,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-5,
        weight_decay: 0.1,
    };
    let mut opt = AdamW::new(cfg, &[(2, true)]);
    let mut p = [1.0f32, -2.0];
    let grads = [[0.5f32, 1e-3], [-0.25f32, 3.0]];
    let (mut ep, mut m, mut v) = ([1.0f64, -2.0], [0.0f64; 2], [0.0f64; 2]);
    for (t, g) in grads.iter().enumerate() {
        opt.step(&mut [&mut p], &[g]).unwrap();
        let t = (t + 1) as f64;
        for k in 0..2 {
            let gk = f64::from(g[k]);
            ep[k] *= 1.0 - 0.1 * 0.1;
            m[k] = 0.9 * m[k] + 0.1 * gk;
            v[k] = 0.999 * v[k] + 0.001 * gk * gk;
            let denom = v[k].sqrt() / (1.0 - 0.999f64.powf(t)).sqrt() + 1e-5;
            ep[k] -= 0.1 / (1.0 - 0.9f64.powf(t)) * m[k] / denom;
            assert!(
                (f64::from(p[k]) - ep[k]).abs() < 1e-6,
                "step {t} p[{k}] {} vs {}",
                p[k],
                ep[k]
            );
        }
    }
    assert_eq!(opt.groups[0].step, 2);
}

#[test]
fn no_decay_group_and_skipped_group_keep_their_state() {
    let cfg = AdamWConfig {
        lr: 0.01,
        weight_decay: 0.5,
        ..AdamWConfig::default()
    };
    let mut opt = AdamW::new(cfg, &[(1, true), (1, false)]);
    let (mut a, mut b) = ([1.0f32], [1.0f32]);
    // Zero gradients: only weight decay moves a parameter.
    opt.step(&mut [&mut a, &mut b], &[&[0.0], &[0.0]]).unwrap();
    assert!((a[0] - (1.0 - 0.01 * 0.5)).abs() < 1e-7);
    assert_eq!(b[0], 1.0);
    opt.step_group(1, &mut b, &[1.0]).unwrap();
    assert_eq!((opt.groups[0].step, opt.groups[1].step), (1, 2));
    assert!(opt.step_group(2, &mut b, &[1.0]).is_err());
    assert!(opt.step_group(0, &mut [0.0, 0.0], &[1.0, 1.0]).is_err());
    // Serde round trip keeps every bit (checkpoint/resume).
    let json = serde_json::to_string(&opt).unwrap();
    let back: AdamW = serde_json::from_str(&json).unwrap();
    assert_eq!(back, opt);
}

#[test]
fn clip_grad_norm_is_global_and_returns_pre_clip_norm() {
    let (mut g1, mut g2) = ([3.0f32, 4.0], [12.0f32]);
    let norm = clip_grad_norm(&mut [&mut g1, &mut g2], 1.3);
    assert!((norm - 13.0).abs() < 1e-6);
    let coef = 1.3f32 / (13.0 + 1e-6);
    assert_eq!(g1, [3.0 * coef, 4.0 * coef]);
    assert_eq!(g2, [12.0 * coef]);
    let after = (g1.iter().chain(&g2).map(|x| x * x).sum::<f32>()).sqrt();
    assert!((after - 1.3).abs() < 1e-5);
    // Below the bound nothing changes (bitwise).
    let mut g3 = [0.1f32, -0.2];
    let n = clip_grad_norm(&mut [&mut g3], 0.5);
    assert!((n - 0.05f32.sqrt()).abs() < 1e-7);
    assert_eq!(g3, [0.1, -0.2]);
}
