//! PPO: loss terms by hand on three samples, full-loss gradients vs f64 finite differences,
//! iteration-0 identity, determinism (seed and thread count), target-KL early stop, critic
//! warm-up, adaptive KL coefficient, LR annealing, shape errors, and a learning sanity check.

mod common;

use std::f64::consts::PI;

use common::{
    assert_grad_close, central_diff, gaussian_logp_f64, mlp_forward_f64, ppo_loss_f64, to_f64,
    RefBatch, RefCfg,
};
use deltaplan_learn::{
    explained_variance, ActOutput, ActWorkspace, ActorCritic, ActorCriticConfig, LearnError,
    MinibatchRef, OutputInit, Ppo, PpoConfig, RolloutBatch,
};
use rand::{RngExt, SeedableRng};

fn rng(seed: u64) -> rand_pcg::Pcg64 {
    rand_pcg::Pcg64::seed_from_u64(seed)
}

/// Three samples through a net whose outputs are constants (zero output weights): mu = (0.1,
/// -0.2), V = 0.5. Every expected value below is written out from the PPO formulas in f64.
#[test]
fn loss_terms_and_output_gradients_by_hand() {
    let mut ac = ActorCritic::new(&ActorCriticConfig::new(2, 2, &[3], 1.0), &mut rng(0)).unwrap();
    ac.set_tensor("actor_mean.2.weight", &[2, 3], &[0.0; 6])
        .unwrap();
    ac.set_tensor("actor_mean.2.bias", &[2], &[0.1, -0.2])
        .unwrap();
    ac.set_tensor("critic.2.weight", &[1, 3], &[0.0; 3])
        .unwrap();
    ac.set_tensor("critic.2.bias", &[1], &[0.5]).unwrap();
    ac.set_tensor("actor_logstd", &[1, 2], &[-1.0, -0.5])
        .unwrap();
    ac.ref_log_std = vec![-0.5, -0.5];
    let (mu, ls, rls, v) = ([0.1f64, -0.2], [-1.0f64, -0.5], [-0.5f64, -0.5], 0.5f64);
    let (clip, vf_coef, ent_coef, beta) = (0.2f64, 0.5f64, 0.01f64, 0.1f64);

    let u = [0.3f32, -0.1, -0.2, 0.4, 0.15, -0.6];
    let logr = [0.5f64, -0.05, -0.4]; // ratio clipped high, inside, clipped low
    let adv = [1.0f32, -2.0, 0.5];
    let returns = [1.0f32, 0.2, 0.45];
    let old_values = [0.2f32, 0.55, 0.9];
    let logp: Vec<f64> = (0..3)
        .map(|i| {
            (0..2)
                .map(|j| {
                    let z = (f64::from(u[2 * i + j]) - mu[j]) / ls[j].exp();
                    -0.5 * z * z - ls[j] - 0.5 * (2.0 * PI).ln()
                })
                .sum()
        })
        .collect();
    let old_logp: Vec<f32> = (0..3).map(|i| (logp[i] - logr[i]) as f32).collect();

    let cfg = PpoConfig {
        clip_coef: clip as f32,
        vf_coef: vf_coef as f32,
        ent_coef: ent_coef as f32,
        clip_vloss: true,
        norm_adv: true,
        ..PpoConfig::cleanrl()
    };
    let mut ppo = Ppo::new(cfg, ac, 100).unwrap();
    let obs = [1.0f32, 2.0, -1.0, 0.5, 0.3, -0.7];
    let mb = MinibatchRef {
        obs: &obs,
        u: &u,
        old_logp: &old_logp,
        advantages: &adv,
        returns: &returns,
        old_values: &old_values,
        expert: &[],
    };
    let s = ppo.minibatch_loss_and_grads(mb, beta as f32).unwrap();

    // Advantage normalisation with Bessel's correction.
    let a64: Vec<f64> = adv.iter().map(|&x| f64::from(x)).collect();
    let mean = a64.iter().sum::<f64>() / 3.0;
    let std = (a64.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 2.0).sqrt();
    let an: Vec<f64> = a64.iter().map(|x| (x - mean) / (std + 1e-8)).collect();
    let r: Vec<f64> = logr.iter().map(|l| l.exp()).collect();
    // Sample 0: A>0, r=1.65 -> clipped term -A*1.2 is the max. Sample 1: inside, -A*r.
    // Sample 2: A>0, r=0.67 -> unclipped -A*r is the max (pessimistic bound).
    let pg = (-an[0] * 1.2 + -an[1] * r[1] + -an[2] * r[2]) / 3.0;
    // Values: V = 0.5. Sample 0: diff .3 -> V_clip .4; sample 1: inside; sample 2: V_clip .7.
    let vl = 0.5 * (f64::max(0.25, 0.36) + 0.09 + f64::max(0.0025, 0.0625)) / 3.0;
    let ent: f64 = ls.iter().map(|s| 0.5 + 0.5 * (2.0 * PI).ln() + s).sum();
    let kl: f64 = (0..2)
        .map(|j| {
            rls[j] - ls[j] + ((2.0 * ls[j]).exp() + mu[j] * mu[j]) / (2.0 * (2.0 * rls[j]).exp())
                - 0.5
        })
        .sum();
    let approx_kl = r.iter().zip(&logr).map(|(r, l)| (r - 1.0) - l).sum::<f64>() / 3.0;
    let old_approx_kl = -logr.iter().sum::<f64>() / 3.0;
    let loss = pg - ent_coef * ent + vf_coef * vl + beta * kl;
    let checks = [
        ("pg_loss", s.pg_loss, pg),
        ("v_loss", s.v_loss, vl),
        ("entropy", s.entropy, ent),
        ("kl_sft", s.kl_sft, kl),
        ("approx_kl", s.approx_kl, approx_kl),
        ("old_approx_kl", s.old_approx_kl, old_approx_kl),
        ("clip_frac", s.clip_frac, 2.0 / 3.0),
        ("loss", s.loss, loss),
    ];
    for (what, got, want) in checks {
        assert!(
            (f64::from(got) - want).abs() < 1e-5,
            "{what}: {got} vs {want}"
        );
    }

    // Gradients at the constant outputs, by hand:
    // critic bias: only sample 1 passes gradient (the others take the clipped value, clamp
    // saturated): vf_coef * 0.5/3 * 2 (V - R_1).
    let g = ppo.ac.named_grads();
    let grad = |name: &str| g.iter().find(|t| t.name == name).unwrap().data.to_vec();
    let want_vb = vf_coef * 0.5 / 3.0 * 2.0 * (v - 0.2);
    assert!((f64::from(grad("critic.2.bias")[0]) - want_vb).abs() < 1e-6);
    // actor bias j: sum over unclipped samples (1, 2) of -A r / 3 * (u - mu)/sigma^2, plus
    // beta * mu / sigma_ref^2 (mean over the batch of a per-sample constant).
    // log_std j: same samples with (z^2 - 1), minus ent_coef, plus beta (sigma^2/sigma_ref^2 - 1).
    for j in 0..2 {
        let var = (2.0 * ls[j]).exp();
        let mut dmu = beta * mu[j] / (2.0 * rls[j]).exp();
        let mut dls = -ent_coef + beta * (var / (2.0 * rls[j]).exp() - 1.0);
        for i in [1, 2] {
            let e = f64::from(u[2 * i + j]) - mu[j];
            dmu += -an[i] * r[i] / 3.0 * e / var;
            dls += -an[i] * r[i] / 3.0 * (e * e / var - 1.0);
        }
        let (gb, gs) = (grad("actor_mean.2.bias")[j], grad("actor_logstd")[j]);
        assert!((f64::from(gb) - dmu).abs() < 1e-5, "dmu[{j}] {gb} vs {dmu}");
        assert!(
            (f64::from(gs) - dls).abs() < 1e-5,
            "dlog_std[{j}] {gs} vs {dls}"
        );
    }
}

fn random_setup(seed: u64, b: usize) -> (ActorCritic, RolloutBatch) {
    let (d, a) = (3, 2);
    let mut cfg = ActorCriticConfig::new(d, a, &[5, 4], 1.0);
    cfg.actor_output = OutputInit::Orthogonal { gain: 0.8 };
    let mut r = rng(seed);
    let mut ac = ActorCritic::new(&cfg, &mut r).unwrap();
    ac.log_std = vec![-0.4, -0.9];
    ac.ref_log_std = vec![-0.7, -1.2];
    for p in ac
        .actor
        .params_mut()
        .iter_mut()
        .chain(ac.critic.params_mut())
    {
        *p += r.random_range(-0.1f32..0.1);
    }
    let obs: Vec<f32> = (0..b * d).map(|_| r.random_range(-1.5f32..1.5)).collect();
    let mu = mlp_forward_f64(ac.actor.sizes(), &to_f64(ac.actor.params()), &to_f64(&obs));
    let val = mlp_forward_f64(
        ac.critic.sizes(),
        &to_f64(ac.critic.params()),
        &to_f64(&obs),
    );
    let u: Vec<f32> = mu
        .iter()
        .map(|m| (*m + r.random_range(-0.8f64..0.8)) as f32)
        .collect();
    let logp: Vec<f32> = (0..b)
        .map(|i| {
            let lp = gaussian_logp_f64(
                &to_f64(&u[i * a..(i + 1) * a]),
                &mu[i * a..(i + 1) * a],
                &to_f64(&ac.log_std),
            );
            (lp + r.random_range(-0.5f64..0.5)) as f32
        })
        .collect();
    let rollout = RolloutBatch {
        obs,
        u,
        logp,
        advantages: (0..b).map(|_| r.random_range(-2.0f32..2.0)).collect(),
        returns: val
            .iter()
            .map(|v| (*v + r.random_range(-1.0f64..1.0)) as f32)
            .collect(),
        values: val
            .iter()
            .map(|v| (*v + r.random_range(-0.4f64..0.4)) as f32)
            .collect(),
        expert: Vec::new(),
    };
    (ac, rollout)
}

/// Full PPO loss gradients w.r.t. actor params, log_std and critic params vs f64 central
/// differences (h = 1e-6) of an independent f64 implementation of the loss.
/// Tolerance: |analytic - fd| <= 2e-5 + 1e-4 |fd|. Samples within 1e-3 of a kink (clip bounds)
/// are rejected up front so the finite differences are valid.
#[test]
fn full_loss_gradients_match_finite_differences() {
    for (seed, clip_vloss, norm_adv, expert_coef) in [
        (1u64, true, true, 0.0),
        (2, false, false, 0.0),
        (3, true, false, 0.0),
        (4, true, true, 0.7),
    ] {
        let b = 8;
        let (ac, mut ro) = random_setup(seed, b);
        if expert_coef > 0.0 {
            // Expert corrections in [-1, 1], some at the bounds.
            let mut r = rng(seed + 100);
            ro.expert = (0..b * 2)
                .map(|k| match k % 5 {
                    0 => 1.0,
                    1 => -1.0,
                    _ => r.random_range(-0.9f32..0.9),
                })
                .collect();
        }
        let cfg = PpoConfig {
            clip_vloss,
            norm_adv,
            ent_coef: 0.02,
            expert_coef,
            ..PpoConfig::cleanrl()
        };
        let beta = 0.3f32;
        let rcfg = RefCfg {
            clip: 0.2,
            vf_coef: 0.5,
            ent_coef: 0.02,
            beta: f64::from(beta),
            clip_vloss,
            norm_adv,
            expert_coef: f64::from(expert_coef),
        };
        let mb64 = RefBatch {
            obs: to_f64(&ro.obs),
            u: to_f64(&ro.u),
            old_logp: to_f64(&ro.logp),
            adv: to_f64(&ro.advantages),
            ret: to_f64(&ro.returns),
            old_v: to_f64(&ro.values),
            expert: to_f64(&ro.expert),
        };
        let (asz, csz) = (ac.actor.sizes().to_vec(), ac.critic.sizes().to_vec());
        let (ap, ls, cp, rls) = (
            to_f64(ac.actor.params()),
            to_f64(&ac.log_std),
            to_f64(ac.critic.params()),
            to_f64(&ac.ref_log_std),
        );

        // Kink guard.
        let mu = mlp_forward_f64(&asz, &ap, &mb64.obs);
        let v = mlp_forward_f64(&csz, &cp, &mb64.obs);
        for i in 0..b {
            let r = (gaussian_logp_f64(&mb64.u[2 * i..2 * i + 2], &mu[2 * i..2 * i + 2], &ls)
                - mb64.old_logp[i])
                .exp();
            assert!(
                (r - 0.8).abs() > 1e-3 && (r - 1.2).abs() > 1e-3,
                "seed {seed}: ratio at a kink"
            );
            let diff = v[i] - mb64.old_v[i];
            assert!(
                (diff.abs() - 0.2).abs() > 1e-3,
                "seed {seed}: value diff at a kink"
            );
        }

        let mut ppo = Ppo::new(cfg, ac, 100).unwrap();
        let s = ppo
            .minibatch_loss_and_grads(ro.as_minibatch(), beta)
            .unwrap();
        let want = ppo_loss_f64(&asz, &ap, &ls, &csz, &cp, &rls, &mb64, &rcfg);
        let got = s.as_array();
        for (k, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (f64::from(*g) - w).abs() < 1e-5,
                "seed {seed} term {k}: {g} vs {w}"
            );
        }
        assert!(
            s.clip_frac > 0.0 && s.clip_frac < 1.0,
            "both branches exercised"
        );

        let h = 1e-6;
        let fd_actor = central_diff(&ap, h, |p| {
            ppo_loss_f64(&asz, p, &ls, &csz, &cp, &rls, &mb64, &rcfg)[0]
        });
        let fd_ls = central_diff(&ls, h, |l| {
            ppo_loss_f64(&asz, &ap, l, &csz, &cp, &rls, &mb64, &rcfg)[0]
        });
        let fd_critic = central_diff(&cp, h, |p| {
            ppo_loss_f64(&asz, &ap, &ls, &csz, p, &rls, &mb64, &rcfg)[0]
        });
        let e1 = assert_grad_close("actor", ppo.ac.actor.grads(), &fd_actor, 2e-5, 1e-4);
        let e2 = assert_grad_close("log_std", &ppo.ac.log_std_grad, &fd_ls, 2e-5, 1e-4);
        let e3 = assert_grad_close("critic", ppo.ac.critic.grads(), &fd_critic, 2e-5, 1e-4);
        println!(
            "seed {seed}: max |analytic - fd| actor {e1:.2e} log_std {e2:.2e} critic {e3:.2e}"
        );
        assert!(ppo.ac.actor.grads().iter().any(|g| g.abs() > 1e-3));
        assert!(ppo.ac.critic.grads().iter().any(|g| g.abs() > 1e-3));
    }
}

fn act_batch(
    ac: &ActorCritic,
    obs: &[f32],
    det: bool,
    seed: u64,
) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
    let b = obs.len() / ac.obs_dim();
    let a = ac.act_dim();
    let (mut u, mut delta, mut logp, mut value) = (
        vec![0.0; b * a],
        vec![0.0; b * a],
        vec![0.0; b],
        vec![0.0; b],
    );
    let out = ActOutput {
        u: &mut u,
        delta: &mut delta,
        logp: &mut logp,
        value: &mut value,
    };
    let ws = &mut ActWorkspace::new();
    if det {
        ac.act_deterministic(obs, ws, out).unwrap();
    } else {
        ac.sample(obs, &mut rng(seed), ws, out).unwrap();
    }
    (u, delta, logp, value)
}

#[test]
fn iteration_zero_is_the_identity() {
    let mut cfg = ActorCriticConfig::new(16, 40, &[64, 64], 0.5);
    assert_eq!(cfg.log_std_init, deltaplan_learn::DEFAULT_LOG_STD_INIT);
    cfg.log_std_init = -3.0; // small noise: tanh is near-linear, so sd(delta) = 0.5 sigma
    let ac = ActorCritic::new(&cfg, &mut rng(1)).unwrap();
    let obs: Vec<f32> = (0..64 * 16)
        .map(|k| (k as f32 * 0.731).sin() * 3.0)
        .collect();
    let (u, delta, logp, value) = act_batch(&ac, &obs, true, 0);
    assert!(u.iter().all(|&x| x == 0.0));
    assert!(
        delta.iter().all(|&x| x == 0.0),
        "deterministic delta must be exactly 0"
    );
    assert!(logp.iter().all(|l| l.is_finite()) && value.iter().all(|v| v.is_finite()));
    assert!(
        value.iter().any(|&v| v != 0.0),
        "critic is not zero-initialised"
    );
    // Stochastic actions explore with sigma = exp(-3) and stay bounded.
    let (_, delta, _, _) = act_batch(&ac, &obs, false, 0);
    assert!(delta.iter().all(|&x| x.abs() <= 0.5));
    let sd = (delta.iter().map(|x| x * x).sum::<f32>() / delta.len() as f32).sqrt();
    assert!((sd - 0.5 * (-3.0f32).exp()).abs() < 0.003, "sd {sd}");
}

/// Contextual bandit: the best correction is 0.3 tanh(obs[..2]); reward = -|delta - best|^2.
fn bandit_rollout(ac: &ActorCritic, n: usize, seed: u64) -> (RolloutBatch, f32) {
    let d = ac.obs_dim();
    let mut r = rng(seed);
    let obs: Vec<f32> = (0..n * d).map(|_| r.random_range(-2.0f32..2.0)).collect();
    let (u, delta, logp, values) = act_batch(ac, &obs, false, seed ^ 0xABCD);
    let rewards: Vec<f32> = (0..n)
        .map(|i| {
            -(0..2)
                .map(|j| (delta[i * 2 + j] - 0.3 * obs[i * d + j].tanh()).powi(2))
                .sum::<f32>()
        })
        .collect();
    // One-step episodes: terminated, so A = r - V and R = r.
    let advantages = rewards.iter().zip(&values).map(|(r, v)| r - v).collect();
    let mean = rewards.iter().sum::<f32>() / n as f32;
    (
        RolloutBatch {
            obs,
            u,
            logp,
            advantages,
            returns: rewards,
            values,
            expert: Vec::new(),
        },
        mean,
    )
}

fn det_reward(ac: &ActorCritic) -> f32 {
    let d = ac.obs_dim();
    let obs: Vec<f32> = (0..512 * d)
        .map(|k| ((k * 7919 % 1000) as f32 / 250.0) - 2.0)
        .collect();
    let (_, delta, _, _) = act_batch(ac, &obs, true, 0);
    (0..512)
        .map(|i| {
            -(0..2)
                .map(|j| (delta[i * 2 + j] - 0.3 * obs[i * d + j].tanh()).powi(2))
                .sum::<f32>()
        })
        .sum::<f32>()
        / 512.0
}

#[test]
fn ppo_learns_a_contextual_bandit() {
    let mut cfg_ac = ActorCriticConfig::new(4, 2, &[32, 32], 0.5);
    cfg_ac.log_std_init = -2.0;
    let ac = ActorCritic::new(&cfg_ac, &mut rng(7)).unwrap();
    let cfg = PpoConfig {
        learning_rate: 3e-3,
        ..PpoConfig::cleanrl()
    };
    let mut ppo = Ppo::new(cfg, ac, 60).unwrap();
    let before = det_reward(&ppo.ac);
    let mut r = rng(8);
    for it in 0..60 {
        let (ro, _) = bandit_rollout(&ppo.ac, 512, 100 + it);
        let st = ppo.update(&ro, &mut r).unwrap();
        assert!(st.losses.loss.is_finite());
    }
    let after = det_reward(&ppo.ac);
    println!("bandit deterministic reward: before {before:.5}, after {after:.5}");
    assert!(
        after > 0.2 * before,
        "PPO did not learn: {before} -> {after}"
    );
}

fn trained_bits(threads: usize) -> Vec<u32> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        let ac =
            ActorCritic::new(&ActorCriticConfig::new(16, 4, &[64, 64], 0.5), &mut rng(5)).unwrap();
        let mut ppo = Ppo::new(
            PpoConfig {
                num_minibatches: 2,
                ..PpoConfig::cleanrl()
            },
            ac,
            100,
        )
        .unwrap();
        let mut r = rng(6);
        for it in 0..3 {
            let mut ro = bandit_rollout(&ppo.ac, 256, it).0;
            ro.obs.iter_mut().for_each(|x| *x *= 0.5);
            ppo.update(&ro, &mut r).unwrap();
        }
        ppo.ac
            .named_tensors()
            .iter()
            .flat_map(|t| t.data.iter().map(|x| x.to_bits()))
            .collect()
    })
}

#[test]
fn same_seed_same_bits_regardless_of_thread_count() {
    let one = trained_bits(1);
    assert_eq!(one, trained_bits(1));
    assert_eq!(one, trained_bits(2));
    assert_eq!(one, trained_bits(3));
}

#[test]
fn target_kl_stops_the_update_early() {
    let (ac, _) = random_setup(4, 8);
    let cfg = PpoConfig {
        learning_rate: 0.05,
        anneal_lr: false,
        target_kl: Some(1e-4),
        num_minibatches: 4,
        update_epochs: 10,
        ..PpoConfig::cleanrl()
    };
    let mut ppo = Ppo::new(cfg, ac, 100).unwrap();
    let (ro, _) = bandit_rollout_small(&ppo.ac);
    let st = ppo.update(&ro, &mut rng(1)).unwrap();
    assert!(st.early_stopped);
    assert!(
        st.minibatch_steps >= 1 && st.minibatch_steps < 40,
        "{}",
        st.minibatch_steps
    );
}

fn bandit_rollout_small(ac: &ActorCritic) -> (RolloutBatch, f32) {
    let n = 64;
    let obs: Vec<f32> = (0..n * 3).map(|k| (k as f32 * 0.37).sin()).collect();
    let (u, _delta, logp, values) = act_batch(ac, &obs, false, 9);
    let advantages: Vec<f32> = (0..n).map(|i| (i as f32 * 1.3).cos()).collect();
    let returns = values.iter().zip(&advantages).map(|(v, a)| v + a).collect();
    (
        RolloutBatch {
            obs,
            u,
            logp,
            advantages,
            returns,
            values,
            expert: Vec::new(),
        },
        0.0,
    )
}

#[test]
fn critic_warmup_freezes_the_actor() {
    let (ac, _) = random_setup(5, 8);
    let cfg = PpoConfig {
        critic_warmup_iters: 1,
        ..PpoConfig::cleanrl()
    };
    let mut ppo = Ppo::new(cfg, ac, 100).unwrap();
    let (ro, _) = bandit_rollout_small(&ppo.ac);
    let (actor0, ls0, critic0) = (
        ppo.ac.actor.clone(),
        ppo.ac.log_std.clone(),
        ppo.ac.critic.params().to_vec(),
    );
    let st = ppo.update(&ro, &mut rng(1)).unwrap();
    assert!(st.actor_frozen);
    assert_eq!(ppo.ac.actor.params(), actor0.params());
    assert_eq!(ppo.ac.log_std, ls0);
    assert_ne!(ppo.ac.critic.params(), critic0.as_slice());
    assert_eq!(
        (ppo.optim.groups[0].step, ppo.optim.groups[2].step),
        (0, 16)
    );
    let st = ppo.update(&ro, &mut rng(2)).unwrap();
    assert!(!st.actor_frozen);
    assert_ne!(ppo.ac.actor.params(), actor0.params());
    assert_eq!(
        ppo.optim.groups[0].step, 16,
        "actor bias correction starts at its first step"
    );
}

#[test]
fn adaptive_kl_coefficient_and_lr_annealing() {
    for (target, want) in [(1e-6f32, 0.02f32), (1e6, 0.005)] {
        let (ac, _) = random_setup(6, 8);
        let cfg = PpoConfig {
            kl_sft_coef: 0.01,
            kl_sft_target: Some(target),
            kl_sft_adaptive: true,
            ..PpoConfig::cleanrl()
        };
        let mut ppo = Ppo::new(cfg, ac, 4).unwrap();
        let (ro, _) = bandit_rollout_small(&ppo.ac);
        let st = ppo.update(&ro, &mut rng(1)).unwrap();
        assert_eq!(
            (st.kl_sft_coef, st.next_kl_sft_coef, ppo.kl_sft_coef),
            (0.01, want, want)
        );
        assert!((st.learning_rate - 3e-4).abs() < 1e-12);
        let st = ppo.update(&ro, &mut rng(1)).unwrap();
        assert!((st.learning_rate - 3e-4 * 0.75).abs() < 1e-12);
    }
    let cfg = PpoConfig::cleanrl();
    assert_eq!(cfg.lr_at(0, 10), 3e-4);
    assert!((cfg.lr_at(5, 10) - 1.5e-4).abs() < 1e-12);
    assert_eq!(cfg.lr_at(20, 10), 0.0);
}

#[test]
fn explained_variance_by_hand() {
    // y = [1, 2, 3]: var 2/3. residual [0, 0.5, -0.5]: mean 0, var 1/6. ev = 1 - 0.25.
    let ev = explained_variance(&[1.0, 1.5, 3.5], &[1.0, 2.0, 3.0]);
    assert!((ev - 0.75).abs() < 1e-6);
    assert!(explained_variance(&[1.0, 2.0], &[3.0, 3.0]).is_nan());
}

#[test]
fn shape_and_config_errors() {
    let (ac, ro) = random_setup(7, 8);
    let mut ppo = Ppo::new(PpoConfig::cleanrl(), ac, 100).unwrap();
    let mut bad = ro.as_minibatch();
    bad.u = &ro.u[..ro.u.len() - 1];
    match ppo.minibatch_loss_and_grads(bad, 0.0) {
        Err(LearnError::Shape {
            name,
            expected: 16,
            got: 15,
        }) => assert_eq!(name, "u"),
        other => panic!("unexpected {other:?}"),
    }
    let tiny = RolloutBatch {
        obs: ro.obs[..3 * 6].to_vec(),
        u: ro.u[..2 * 6].to_vec(),
        logp: ro.logp[..6].to_vec(),
        advantages: ro.advantages[..6].to_vec(),
        returns: ro.returns[..6].to_vec(),
        values: ro.values[..6].to_vec(),
        expert: Vec::new(),
    };
    assert!(matches!(
        ppo.update(&tiny, &mut rng(0)),
        Err(LearnError::Config(_))
    ));
    assert!(Ppo::new(
        PpoConfig {
            clip_coef: 0.0,
            ..PpoConfig::cleanrl()
        },
        ppo.ac.clone(),
        100
    )
    .is_err());
    assert!(Ppo::new(
        PpoConfig {
            kl_sft_adaptive: true,
            ..PpoConfig::cleanrl()
        },
        ppo.ac.clone(),
        100
    )
    .is_err());
    let mut cfg = ActorCriticConfig::new(3, 2, &[4], 0.5);
    cfg.max_delta = vec![0.5];
    assert!(ActorCritic::new(&cfg, &mut rng(0)).is_err());
    assert!(matches!(
        ppo.ac.set_tensor("actor_mean.9.weight", &[1], &[0.0]),
        Err(LearnError::UnknownTensor(_))
    ));
    assert!(ppo
        .ac
        .set_tensor("actor_logstd", &[1, 3], &[0.0; 3])
        .is_err());
}
