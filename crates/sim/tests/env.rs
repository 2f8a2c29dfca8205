//! The environment seam: driving a batch through `&mut dyn VecEnv` (and its expert and
//! resume extensions) gives the same bits as driving `BatchEnv` directly.

use deltaplan_sim::{
    BatchEnv, Difficulty, EpisodeStats, ExpertEnv, Family, ResumableEnv, SimConfig, Split,
    StepBuffers, VecEnv,
};

/// Every output bit of `steps` steps of [`follow_route`] plans, through the trait.
fn drive_dyn(env: &mut dyn VecEnv, steps: usize) -> Vec<u32> {
    let n = env.num_envs();
    let mut buf = StepBuffers::for_env(env);
    let mut plans = vec![0.0; n * env.action_dim()];
    let mut obs = vec![0.0; n * env.obs_dim()];
    let mut bits = Vec::new();
    env.observe(&mut obs);
    bits.extend(obs.iter().map(|x| x.to_bits()));
    for _ in 0..steps {
        follow_route(&obs, &mut plans);
        env.step(&plans, &mut buf);
        obs.copy_from_slice(&buf.obs);
        record(&buf, &mut bits);
        for i in 0..n {
            if buf.terminated[i] || buf.truncated[i] {
                bits.push(env.finished(i).driving_score().to_bits());
                bits.push(u32::MAX);
            }
        }
    }
    bits
}

/// The same loop on the concrete type, through its inherent methods.
fn drive_direct(env: &mut BatchEnv, steps: usize) -> Vec<u32> {
    let n = env.len();
    let mut buf = StepBuffers::new(n);
    let mut plans = vec![0.0; n * env.action_dim()];
    let mut obs = vec![0.0; n * deltaplan_sim::OBS_DIM];
    let mut bits = Vec::new();
    env.observe(&mut obs);
    bits.extend(obs.iter().map(|x| x.to_bits()));
    for _ in 0..steps {
        follow_route(&obs, &mut plans);
        env.step(&plans, &mut buf);
        obs.copy_from_slice(&buf.obs);
        record(&buf, &mut bits);
        for i in 0..n {
            if buf.terminated[i] || buf.truncated[i] {
                bits.push(env.finished(i).driving_score().to_bits());
                bits.push(u32::MAX);
            }
        }
    }
    bits
}

/// A planner that sees only observations, as the refinement loop's does: waypoint j is 40 %
/// of the way to the j-th route sample (2 to 50 m ahead), about 10 m/s along the route.
fn follow_route(obs: &[f32], plans: &mut [f32]) {
    let h = SimConfig::default().horizon;
    for (o, p) in obs
        .chunks_exact(deltaplan_sim::OBS_DIM)
        .zip(plans.chunks_exact_mut(2 * h))
    {
        for j in 0..h {
            p[2 * j] = 0.4 * 50.0 * o[8 + 2 * j];
            p[2 * j + 1] = 0.4 * 20.0 * o[9 + 2 * j];
        }
    }
}

fn record(buf: &StepBuffers, bits: &mut Vec<u32>) {
    bits.extend(buf.obs.iter().chain(&buf.reward).map(|x| x.to_bits()));
    bits.extend(
        buf.terminated
            .iter()
            .zip(&buf.truncated)
            .map(|(&a, &b)| u32::from(a) * 2 + u32::from(b)),
    );
}

fn training_batch(seed: u64) -> BatchEnv {
    BatchEnv::train(
        SimConfig::default(),
        8,
        seed,
        Family::ALL.to_vec(),
        Difficulty::default(),
    )
}

#[test]
fn a_dyn_vec_env_steps_like_the_batch_it_wraps() {
    let direct = drive_direct(&mut training_batch(3), 500);
    let through_trait = drive_dyn(&mut training_batch(3), 500);
    assert!(direct == through_trait, "the trait changed the results");
    // Not vacuous: the run crosses episode boundaries (each end is marked by u32::MAX, which
    // no observation or reward here takes) and another seed differs.
    let ends = direct.iter().filter(|&&b| b == u32::MAX).count();
    assert!(ends >= 4, "{ends} episodes ended");
    assert!(drive_dyn(&mut training_batch(4), 500) != direct);
}

#[test]
fn a_fixed_list_runs_once_through_the_trait() {
    let specs = Split::Eval.suite(&Family::ALL, 2, Difficulty::default());
    let cfg = SimConfig::default();
    let run = |env: &mut dyn ExpertEnv| -> Vec<EpisodeStats> {
        let mut buf = StepBuffers::for_env(env);
        let mut plans = vec![0.0; env.num_envs() * env.action_dim()];
        let mut steps = 0;
        while !env.all_idle() {
            env.expert_actions(&mut plans);
            env.step(&plans, &mut buf);
            steps += 1;
            assert!(steps < 10_000, "a fixed list must end");
        }
        (0..env.num_envs()).map(|i| *env.finished(i)).collect()
    };
    let a = run(&mut BatchEnv::fixed(cfg, specs.clone()));
    let b = run(&mut BatchEnv::fixed(cfg, specs.clone()));
    assert_eq!(a.len(), specs.len());
    assert_eq!(a, b);
    let env = BatchEnv::fixed(cfg, specs.clone());
    let expert: &dyn ExpertEnv = &env;
    for (i, spec) in specs.iter().enumerate() {
        assert_eq!(expert.scenario(i), *spec);
    }
    for (stats, spec) in a.iter().zip(&specs) {
        assert_eq!((stats.family, stats.seed), (spec.family, spec.seed));
        assert_ne!(stats.end, deltaplan_sim::EndReason::Running);
    }
}

#[test]
fn resume_through_the_trait_continues_bit_for_bit() {
    let mut a = training_batch(11);
    drive_dyn(&mut a, 120);
    let snapshot = ResumableEnv::snapshot(&a);
    let tail_a = drive_dyn(&mut a, 150);
    let mut b = training_batch(11);
    let resumable: &mut dyn ResumableEnv = &mut b;
    resumable.restore(&snapshot).unwrap();
    let tail_b = drive_dyn(&mut b, 150);
    assert!(tail_a == tail_b, "resumed batch diverged");
}
