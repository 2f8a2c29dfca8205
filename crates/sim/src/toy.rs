//! The original sketch's toy waypoint task, made learnable.
//!
//! Each step draws a state `x` (D features, standard normal). The ground-truth plan is
//! `W* = A x` (H waypoints), the SFT planner's plan is `W_sft = (A + E) x`: a systematic error
//! `E x` that depends on the observation. The observation is `x` itself, so the optimal
//! residual `-E x` is a function of what the policy sees. (The original drew the SFT error
//! from a hidden RNG, which made `delta = 0` optimal: RL could not beat SFT even in principle.)
//! Reward: minus the mean squared waypoint error of the executed plan. Episodes last `T`
//! steps and end in truncation.

use rand::{RngExt, SeedableRng};
use rand_pcg::Pcg64;

/// A batch of independent toy environments.
pub struct ToyTask {
    pub obs_dim: usize,
    pub action_dim: usize,
    pub episode_len: u32,
    /// Ground truth map A, [action_dim, obs_dim].
    a: Vec<f32>,
    /// SFT error map E, [action_dim, obs_dim].
    e: Vec<f32>,
    states: Vec<f32>,
    t: Vec<u32>,
    rng: Pcg64,
}

impl ToyTask {
    /// `n` environments; `error_scale` sets the size of the SFT error relative to the plan.
    pub fn new(
        n: usize,
        obs_dim: usize,
        horizon: usize,
        error_scale: f32,
        episode_len: u32,
        seed: u64,
    ) -> Self {
        let action_dim = 2 * horizon;
        let mut rng = Pcg64::seed_from_u64(seed);
        let gauss = |rng: &mut Pcg64| {
            // Box-Muller: keeps this crate free of a distributions dependency.
            let u1: f32 = rng.random::<f32>().max(1e-12);
            let u2: f32 = rng.random();
            (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
        };
        let scale = 1.0 / (obs_dim as f32).sqrt();
        let a = (0..action_dim * obs_dim)
            .map(|_| gauss(&mut rng) * scale)
            .collect();
        let e = (0..action_dim * obs_dim)
            .map(|_| gauss(&mut rng) * scale * error_scale)
            .collect();
        let mut toy = ToyTask {
            obs_dim,
            action_dim,
            episode_len,
            a,
            e,
            states: vec![0.0; n * obs_dim],
            t: vec![0; n],
            rng,
        };
        for i in 0..n {
            toy.draw_state(i);
        }
        toy
    }

    pub fn len(&self) -> usize {
        self.t.len()
    }

    pub fn is_empty(&self) -> bool {
        self.t.is_empty()
    }

    fn draw_state(&mut self, i: usize) {
        let d = self.obs_dim;
        for k in 0..d {
            let u1: f32 = self.rng.random::<f32>().max(1e-12);
            let u2: f32 = self.rng.random();
            self.states[i * d + k] = (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos();
        }
    }

    /// Current observations, [N, obs_dim].
    pub fn observations(&self) -> &[f32] {
        &self.states
    }

    fn apply(m: &[f32], x: &[f32], out: &mut [f32]) {
        let d = x.len();
        for (r, o) in out.iter_mut().enumerate() {
            *o = m[r * d..(r + 1) * d]
                .iter()
                .zip(x)
                .map(|(a, b)| a * b)
                .sum();
        }
    }

    /// The SFT planner's plans for the current states, [N, action_dim].
    pub fn sft_plans(&self, out: &mut [f32]) {
        let (d, a) = (self.obs_dim, self.action_dim);
        for i in 0..self.len() {
            let x = &self.states[i * d..(i + 1) * d];
            let o = &mut out[i * a..(i + 1) * a];
            Self::apply(&self.a, x, o);
            let mut err = [0.0f32; 64];
            Self::apply(&self.e, x, &mut err[..a]);
            o.iter_mut().zip(&err[..a]).for_each(|(o, e)| *o += e);
        }
    }

    /// Ground-truth plans, [N, action_dim].
    pub fn true_plans(&self, out: &mut [f32]) {
        let (d, a) = (self.obs_dim, self.action_dim);
        for i in 0..self.len() {
            Self::apply(
                &self.a,
                &self.states[i * d..(i + 1) * d],
                &mut out[i * a..(i + 1) * a],
            );
        }
    }

    /// Executes `plans` ([N, action_dim]); writes rewards and truncation flags, then advances
    /// to fresh states. Returns nothing: observations are read with [`ToyTask::observations`].
    pub fn step(&mut self, plans: &[f32], reward: &mut [f32], truncated: &mut [bool]) {
        let (d, a) = (self.obs_dim, self.action_dim);
        let mut truth = [0.0f32; 64];
        for i in 0..self.len() {
            Self::apply(&self.a, &self.states[i * d..(i + 1) * d], &mut truth[..a]);
            let err: f32 = plans[i * a..(i + 1) * a]
                .iter()
                .zip(&truth[..a])
                .map(|(p, t)| (p - t) * (p - t))
                .sum();
            reward[i] = -err / a as f32;
            self.t[i] += 1;
            truncated[i] = self.t[i] >= self.episode_len;
            if truncated[i] {
                self.t[i] = 0;
            }
            self.draw_state(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sft_error_is_a_function_of_the_observation() {
        let toy = ToyTask::new(4, 6, 3, 0.5, 10, 7);
        let mut sft = vec![0.0; 4 * 6];
        let mut truth = vec![0.0; 4 * 6];
        toy.sft_plans(&mut sft);
        toy.true_plans(&mut truth);
        // The residual truth - sft equals -E x exactly: recompute it from the observation.
        let x = toy.observations();
        for i in 0..4 {
            for r in 0..6 {
                let ex: f32 = (0..6).map(|k| toy.e[r * 6 + k] * x[i * 6 + k]).sum();
                let resid = truth[i * 6 + r] - sft[i * 6 + r];
                assert!((resid + ex).abs() < 1e-5);
            }
        }
        // And it is not zero: SFT is imperfect.
        assert!(sft.iter().zip(&truth).any(|(a, b)| (a - b).abs() > 0.05));
    }

    #[test]
    fn perfect_plan_gets_zero_reward_sft_gets_less() {
        let mut toy = ToyTask::new(8, 5, 4, 0.5, 3, 1);
        let mut truth = vec![0.0; 8 * 8];
        let mut sft = vec![0.0; 8 * 8];
        let mut r = vec![0.0; 8];
        let mut tr = vec![false; 8];
        toy.true_plans(&mut truth);
        toy.step(&truth, &mut r, &mut tr);
        assert!(r.iter().all(|&x| x.abs() < 1e-10));
        toy.sft_plans(&mut sft);
        toy.step(&sft, &mut r, &mut tr);
        assert!(r.iter().all(|&x| x < 0.0));
        toy.step(&sft, &mut r, &mut tr);
        assert!(
            tr.iter().all(|&t| t),
            "episodes truncate after episode_len steps"
        );
    }
}
