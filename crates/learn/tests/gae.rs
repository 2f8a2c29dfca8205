//! GAE: hand-computed values with a termination and a truncation mid-rollout in different envs,
//! plus a randomized comparison with a per-episode f64 reference.

use deltaplan_learn::{gae, GaeSteps, LearnError};
use rand::{RngExt, SeedableRng};

#[test]
fn hand_computed_termination_and_truncation() {
    // T = 3 steps, N = 2 envs, time-major index t * 2 + i. gamma = 0.9, lambda = 0.8.
    // env 0: terminates at t = 1 (its next value, 100, must be ignored), new episode at t = 2.
    // env 1: truncated at t = 0 with V(final obs) = 0.4 (not V(reset obs) = values[t=1] = 0.2).
    let rewards = [1.0, 0.5, 2.0, -1.0, 3.0, 2.0];
    let values = [0.5, 0.1, 0.6, 0.2, 0.7, 0.3];
    let next_values = [0.6, 0.4, 100.0, 0.3, 0.9, 0.8];
    let terminated = [false, false, true, false, false, false];
    let truncated = [false, true, false, false, false, false];
    let (mut adv, mut ret) = ([0.0f32; 6], [0.0f32; 6]);
    gae(
        GaeSteps {
            rewards: &rewards,
            values: &values,
            next_values: &next_values,
            terminated: &terminated,
            truncated: &truncated,
            num_envs: 2,
        },
        0.9,
        0.8,
        &mut adv,
        &mut ret,
    )
    .unwrap();
    // env 0: t2: 3 + .9*.9 - .7 = 3.11; t1 (terminal): 2 - .6 = 1.4; t0: 1 + .9*.6 - .5 + .72*1.4.
    // env 1: t2: 2 + .9*.8 - .3 = 2.42; t1: -1 + .9*.3 - .2 + .72*2.42; t0 (truncated): .5 + .9*.4 - .1.
    let want_adv = [2.048, 0.76, 1.4, 0.8124, 3.11, 2.42];
    for k in 0..6 {
        assert!(
            (adv[k] - want_adv[k]).abs() < 1e-5,
            "adv[{k}] = {} want {}",
            adv[k],
            want_adv[k]
        );
        assert!(
            (ret[k] - (want_adv[k] + values[k])).abs() < 1e-5,
            "ret[{k}]"
        );
    }
}

/// Per-episode reference in f64: walk each env backwards, restart at every boundary.
#[test]
fn matches_reference_on_random_rollouts() {
    let mut rng = rand_pcg::Pcg64::seed_from_u64(17);
    let (t_len, n, gamma, lambda) = (40, 3, 0.97f64, 0.9f64);
    let len = t_len * n;
    let r: Vec<f32> = (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let v: Vec<f32> = (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let nv: Vec<f32> = (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let term: Vec<bool> = (0..len).map(|_| rng.random_range(0..10) == 0).collect();
    let trunc: Vec<bool> = (0..len)
        .map(|k| !term[k] && rng.random_range(0..10) == 0)
        .collect();
    let (mut adv, mut ret) = (vec![0.0f32; len], vec![0.0f32; len]);
    gae(
        GaeSteps {
            rewards: &r,
            values: &v,
            next_values: &nv,
            terminated: &term,
            truncated: &trunc,
            num_envs: n,
        },
        gamma as f32,
        lambda as f32,
        &mut adv,
        &mut ret,
    )
    .unwrap();
    for i in 0..n {
        let mut running = 0.0f64;
        for t in (0..t_len).rev() {
            let k = t * n + i;
            if term[k] || trunc[k] || t == t_len - 1 {
                running = 0.0;
            }
            let boot = if term[k] {
                0.0
            } else {
                gamma * f64::from(nv[k])
            };
            let delta = f64::from(r[k]) + boot - f64::from(v[k]);
            running = delta + gamma * lambda * running;
            assert!((f64::from(adv[k]) - running).abs() < 1e-4, "env {i} t {t}");
            assert!((f64::from(ret[k]) - (running + f64::from(v[k]))).abs() < 1e-4);
        }
    }
}

#[test]
fn shape_errors() {
    let (mut a, mut r) = ([0.0f32; 4], [0.0f32; 4]);
    let err = gae(
        GaeSteps {
            rewards: &[0.0; 4],
            values: &[0.0; 3],
            next_values: &[0.0; 4],
            terminated: &[false; 4],
            truncated: &[false; 4],
            num_envs: 2,
        },
        0.9,
        0.9,
        &mut a,
        &mut r,
    )
    .unwrap_err();
    assert!(matches!(err, LearnError::Shape { ref name, expected: 4, got: 3 } if name == "values"));
    assert!(gae(
        GaeSteps {
            rewards: &[0.0; 4],
            values: &[0.0; 4],
            next_values: &[0.0; 4],
            terminated: &[false; 4],
            truncated: &[false; 4],
            num_envs: 3
        },
        0.9,
        0.9,
        &mut a,
        &mut r
    )
    .is_err());
}
