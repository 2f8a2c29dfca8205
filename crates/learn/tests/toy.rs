//! PPO solves the learnable toy waypoint task: the residual learns the observation-dependent
//! SFT error, so the executed plan's error falls by a stated factor within a stated budget.

use deltaplan_learn::{
    ActOutput, ActWorkspace, ActorCritic, ActorCriticConfig, Ppo, PpoConfig, RolloutBatch,
};
use deltaplan_sim::toy::ToyTask;
use rand::SeedableRng;
use rand_pcg::Pcg64;

const N: usize = 64;
const T: usize = 16;
const OBS: usize = 6;
const H: usize = 3;
const A: usize = 2 * H;

/// Mean squared waypoint error of `sft + delta(mu)` (deterministic policy) on the current
/// states of `toy`.
fn plan_error(toy: &ToyTask, ac: &ActorCritic) -> f32 {
    let n = toy.len();
    let mut sft = vec![0.0; n * A];
    let mut truth = vec![0.0; n * A];
    toy.sft_plans(&mut sft);
    toy.true_plans(&mut truth);
    let (mut u, mut delta, mut logp, mut value) = (
        vec![0.0; n * A],
        vec![0.0; n * A],
        vec![0.0; n],
        vec![0.0; n],
    );
    ac.act_deterministic(
        toy.observations(),
        &mut ActWorkspace::new(),
        ActOutput {
            u: &mut u,
            delta: &mut delta,
            logp: &mut logp,
            value: &mut value,
        },
    )
    .unwrap();
    let err: f32 = (0..n * A)
        .map(|k| (sft[k] + delta[k] - truth[k]).powi(2))
        .sum();
    err / (n * A) as f32
}

#[test]
fn ppo_cuts_the_toy_residual_error_by_at_least_20x_within_120_iterations() {
    let mut toy = ToyTask::new(N, OBS, H, 0.5, T as u32, 3);
    let probe = ToyTask::new(512, OBS, H, 0.5, T as u32, 3);
    let mut rng = Pcg64::seed_from_u64(1);
    let mut ac_cfg = ActorCriticConfig::new(OBS, A, &[64, 64], 2.0);
    ac_cfg.log_std_init = -1.0;
    let ac = ActorCritic::new(&ac_cfg, &mut rng).unwrap();
    let iterations = 120;
    let cfg = PpoConfig {
        learning_rate: 1e-3,
        update_epochs: 4,
        num_minibatches: 4,
        ..PpoConfig::cleanrl()
    };
    let mut ppo = Ppo::new(cfg, ac, iterations).unwrap();
    let sft_error = plan_error(&probe, &ppo.ac);
    let mut roll = RolloutBatch::default();
    let (mut sft, mut delta, mut plans) = (vec![0.0; N * A], vec![0.0; N * A], vec![0.0; N * A]);
    let (mut rewards, mut truncated, mut terminated) =
        (vec![0.0; N * T], vec![false; N * T], vec![false; N * T]);
    let mut next_values = vec![0.0; N * T];
    let (mut reward, mut trunc) = (vec![0.0; N], vec![false; N]);
    let mut ws = ActWorkspace::new();
    let mut curve = Vec::new();
    for _ in 0..iterations {
        roll.obs.resize(N * T * OBS, 0.0);
        roll.u.resize(N * T * A, 0.0);
        roll.logp.resize(N * T, 0.0);
        roll.values.resize(N * T, 0.0);
        roll.advantages.resize(N * T, 0.0);
        roll.returns.resize(N * T, 0.0);
        for t in 0..T {
            let rows = t * N..(t + 1) * N;
            roll.obs[t * N * OBS..(t + 1) * N * OBS].copy_from_slice(toy.observations());
            toy.sft_plans(&mut sft);
            ppo.ac
                .sample(
                    &roll.obs[t * N * OBS..(t + 1) * N * OBS],
                    &mut rng,
                    &mut ws,
                    ActOutput {
                        u: &mut roll.u[t * N * A..(t + 1) * N * A],
                        delta: &mut delta,
                        logp: &mut roll.logp[rows.clone()],
                        value: &mut roll.values[rows.clone()],
                    },
                )
                .unwrap();
            plans
                .iter_mut()
                .zip(sft.iter().zip(&delta))
                .for_each(|(p, (s, d))| *p = s + d);
            toy.step(&plans, &mut reward, &mut trunc);
            rewards[rows.clone()].copy_from_slice(&reward);
            truncated[rows.clone()].copy_from_slice(&trunc);
            terminated[rows].fill(false);
        }
        // States are i.i.d., so V of the state after a step is a valid bootstrap for both
        // continuing and truncated episodes.
        let mut last = vec![0.0; N];
        ppo.ac
            .value(toy.observations(), &mut ws, &mut last)
            .unwrap();
        for t in 0..T {
            for i in 0..N {
                next_values[t * N + i] = if t + 1 < T {
                    roll.values[(t + 1) * N + i]
                } else {
                    last[i]
                };
            }
        }
        deltaplan_learn::gae(
            deltaplan_learn::GaeSteps {
                rewards: &rewards,
                values: &roll.values,
                next_values: &next_values,
                terminated: &terminated,
                truncated: &truncated,
                num_envs: N,
            },
            0.9,
            0.95,
            &mut roll.advantages,
            &mut roll.returns,
        )
        .unwrap();
        ppo.update(&roll, &mut rng).unwrap();
        curve.push(plan_error(&probe, &ppo.ac));
    }
    let final_error = *curve.last().unwrap();
    println!(
        "toy: SFT error {sft_error:.4}, refined {final_error:.4}; curve {:?}",
        &curve[..curve.len().min(10)]
    );
    assert!(
        final_error * 5.0 <= sft_error,
        "residual error {final_error} vs SFT {sft_error}"
    );
    // The learning curve improves: the last quarter is better than the first.
    let q = curve.len() / 4;
    let mean = |s: &[f32]| s.iter().sum::<f32>() / s.len() as f32;
    assert!(mean(&curve[3 * q..]) < 0.5 * mean(&curve[..q]));
}
