//! Generalised Advantage Estimation (Schulman et al. 2016) over a time-major `[T, N]` rollout,
//! with termination and truncation kept apart.
//!
//! Semantics (each flat slice is `[T, N]`, index `t * N + i`):
//! - `next_values[t, i]` is V of the observation that followed step `t` in the same episode: for
//!   the last step of the rollout, V(obs after the last step); on truncation (time limit, route
//!   finished), V(final observation of the finished episode), stored by the caller before the
//!   environment auto-resets.
//! - `delta_t = r_t + gamma * (1 - terminated_t) * next_values_t - V_t`: bootstrapping happens
//!   through `next_values` on truncation and never on termination.
//! - `A_t = delta_t + gamma * lambda * (1 - done_t) * A_{t+1}`, `done = terminated || truncated`:
//!   the recursion stops at every episode boundary.
//! - `returns = A + V` (the critic's regression target).
//!
//! Taking `next_values` explicitly (instead of `values[t + 1]`) is what makes truncation correct:
//! CleanRL's variant reads V of the reset observation of the next episode there.

use crate::error::{check_len, rows_of, Result};

/// The per-step data of a `[T, N]` rollout, time-major (index `t * N + i`).
#[derive(Clone, Copy, Debug)]
pub struct GaeSteps<'a> {
    pub rewards: &'a [f32],
    /// `V(s_t)` at rollout time.
    pub values: &'a [f32],
    /// V of the observation that followed each step (see the module docs).
    pub next_values: &'a [f32],
    pub terminated: &'a [bool],
    pub truncated: &'a [bool],
    /// `N`, the number of worlds.
    pub num_envs: usize,
}

/// Computes advantages and returns of `steps` with discount `gamma` and GAE `lambda`.
pub fn gae(
    steps: GaeSteps<'_>,
    gamma: f32,
    lambda: f32,
    advantages_out: &mut [f32],
    returns_out: &mut [f32],
) -> Result<()> {
    let GaeSteps {
        rewards,
        values,
        next_values,
        terminated,
        truncated,
        num_envs,
    } = steps;
    let len = rewards.len();
    rows_of("rewards", len, num_envs)?;
    check_len("values", values.len(), len)?;
    check_len("next_values", next_values.len(), len)?;
    check_len("terminated", terminated.len(), len)?;
    check_len("truncated", truncated.len(), len)?;
    check_len("advantages_out", advantages_out.len(), len)?;
    check_len("returns_out", returns_out.len(), len)?;
    let n = num_envs;
    let steps = len / n;
    for t in (0..steps).rev() {
        let row = t * n..(t + 1) * n;
        let (adv_now, adv_later) = advantages_out.split_at_mut((t + 1) * n);
        let adv_now = &mut adv_now[row.clone()];
        for (i, a) in adv_now.iter_mut().enumerate() {
            let k = t * n + i;
            let not_terminal = if terminated[k] { 0.0 } else { 1.0 };
            let not_done = if terminated[k] || truncated[k] {
                0.0
            } else {
                1.0
            };
            let delta = rewards[k] + gamma * not_terminal * next_values[k] - values[k];
            let next_adv = if t + 1 < steps { adv_later[i] } else { 0.0 };
            *a = delta + gamma * lambda * not_done * next_adv;
        }
        for ((r, a), v) in returns_out[row.clone()]
            .iter_mut()
            .zip(adv_now.iter())
            .zip(&values[row])
        {
            *r = a + v;
        }
    }
    Ok(())
}
