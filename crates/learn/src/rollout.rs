//! The rollout half of a refinement iteration (steps 1-2 of the `refine` module's iteration): a
//! [`Collector`] drives a range of the training worlds for `T` steps with the current policy and
//! hands back a [`RolloutPart`], everything the learner needs from those worlds.
//!
//! A part is a pure function of the policy's weights, the action noise the learner drew for its
//! worlds, and the worlds' global indices: each world plays the scenarios of its global index,
//! and the networks compute each row independently of the batch it sits in. So parts collected
//! on different machines (Ray actors) and put side by side ([`RolloutPart::interleave`]) are the
//! rollout one process collects from all the worlds, bit for bit.

use deltaplan_sim::batch::StepBuffers;
use deltaplan_sim::env::{ExpertEnv, ResumableEnv, VecEnv};
use deltaplan_sim::EnvSnapshot;

use crate::actor_critic::{ActOutput, ActWorkspace, ActorCritic};
use crate::error::{LearnError, Result};
use crate::phases::{PhaseClock, PhaseSeconds};
use crate::planner::FrozenPlanner;
use crate::policy_input::{policy_input_dim, Buffers};

/// One iteration's rollout of worlds `first_world..first_world + worlds`, time-major
/// (`[T, worlds, ...]`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RolloutPart {
    pub first_world: usize,
    pub worlds: usize,
    /// `T`.
    pub steps: usize,
    /// Policy inputs `[T, k, D]`.
    pub x: Vec<f32>,
    /// Pre-squash actions `[T, k, A]`.
    pub u: Vec<f32>,
    /// `[T, k]` log-probabilities of `u`, values `V(x)`, scaled rewards, and the value of the
    /// observation that followed each step (0 after a termination; `V(final observation)`
    /// after a truncation).
    pub logp: Vec<f32>,
    pub values: Vec<f32>,
    pub rewards: Vec<f32>,
    pub next_values: Vec<f32>,
    pub terminated: Vec<bool>,
    pub truncated: Vec<bool>,
    /// `[T, k, A]` the privileged expert's correction to the frozen plan at each step, per
    /// coordinate in units of `ramp * max_delta`, clipped to [-1, 1]: the target of PPO's
    /// expert-guidance loss. Empty unless the collector records it
    /// ([`Collector::record_expert`]).
    pub expert: Vec<f32>,
    /// Episodes that ended, in (step, world) order.
    pub ended: Vec<EndedEpisode>,
    /// Per world: the sum of |executed correction| over the part's steps and coordinates.
    pub residual_sum: Vec<f64>,
    /// Where the collection's time went (not part of the result's bits).
    pub seconds: PhaseSeconds,
}

/// An episode that ended during a rollout, with what the training curve reports of it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EndedEpisode {
    /// Rollout step (0-based) at which it ended.
    pub step: u32,
    /// Global world index.
    pub world: u32,
    /// Undiscounted, unscaled return.
    pub episode_return: f32,
    pub driving_score: f32,
    pub route_completion: f32,
    pub collided: bool,
    pub offroad: bool,
}

impl RolloutPart {
    /// The parts of disjoint, adjacent world ranges (in any order) as one part over all their
    /// worlds: rows re-interleaved time-major, episodes merged in (step, world) order. Refuses
    /// parts of different lengths, with gaps or overlaps between their worlds.
    pub fn interleave(parts: &mut [RolloutPart]) -> Result<RolloutPart> {
        parts.sort_by_key(|p| p.first_world);
        let first = parts
            .first()
            .ok_or_else(|| LearnError::Config("no rollout parts to learn from".into()))?;
        let (t_len, start) = (first.steps, first.first_world);
        let mut next = start;
        for p in parts.iter() {
            if p.steps != t_len || p.first_world != next {
                return Err(LearnError::Config(format!(
                    "rollout parts do not fit together: worlds {}..{} of {} steps after worlds \
                     {start}..{next} of {t_len} steps (each part must cover the next range of \
                     worlds for the same number of steps)",
                    p.first_world,
                    p.first_world + p.worlds,
                    p.steps,
                )));
            }
            next += p.worlds;
        }
        let n = next - start;
        let mut all = RolloutPart {
            first_world: start,
            worlds: n,
            steps: t_len,
            ..Default::default()
        };
        for t in 0..t_len {
            for p in parts.iter() {
                let k = p.worlds;
                let rows = t * k..(t + 1) * k;
                let width = |v: &[f32]| v.len() / (t_len * k).max(1);
                let (d, a, e) = (width(&p.x), width(&p.u), width(&p.expert));
                all.x.extend_from_slice(&p.x[rows.start * d..rows.end * d]);
                all.u.extend_from_slice(&p.u[rows.start * a..rows.end * a]);
                all.expert
                    .extend_from_slice(&p.expert[rows.start * e..rows.end * e]);
                all.logp.extend_from_slice(&p.logp[rows.clone()]);
                all.values.extend_from_slice(&p.values[rows.clone()]);
                all.rewards.extend_from_slice(&p.rewards[rows.clone()]);
                all.next_values
                    .extend_from_slice(&p.next_values[rows.clone()]);
                all.terminated
                    .extend_from_slice(&p.terminated[rows.clone()]);
                all.truncated.extend_from_slice(&p.truncated[rows]);
            }
        }
        for p in parts.iter() {
            all.ended.extend_from_slice(&p.ended);
            all.residual_sum.extend_from_slice(&p.residual_sum);
            all.seconds.add(&p.seconds);
        }
        all.ended.sort_by_key(|e| (e.step, e.world));
        Ok(all)
    }
}

/// Drives `env`'s worlds (global indices from `first_world`) with a frozen planner plus the
/// residual policy, and records what the learner needs.
pub struct Collector<'a, P: FrozenPlanner, E: ExpertEnv> {
    planner: &'a P,
    env: E,
    /// Whether each step records the expert's correction ([`RolloutPart::expert`]).
    record_expert: bool,
    expert_plan: Vec<f32>,
    first_world: usize,
    /// Current observations `[k, obs_dim]`.
    obs: Vec<f32>,
    /// Per world: the return of its running episode so far.
    running_return: Vec<f32>,
    step: StepBuffers,
    plan: Vec<f32>,
    bufs: Buffers,
    planner_ws: P::Workspace,
    act_ws: ActWorkspace,
    final_rows: Vec<usize>,
    final_obs: Vec<f32>,
    final_bufs: Buffers,
}

impl<'a, P: FrozenPlanner, E: ExpertEnv> Collector<'a, P, E> {
    /// A collector over `env`, whose world 0 is world `first_world` of the whole batch.
    pub fn new(planner: &'a P, env: E, first_world: usize) -> Self {
        let (k, od) = (env.num_envs(), env.obs_dim());
        let mut c = Collector {
            planner,
            record_expert: false,
            expert_plan: Vec::new(),
            first_world,
            obs: vec![0.0; k * od],
            running_return: vec![0.0; k],
            step: StepBuffers::for_env(&env),
            plan: vec![0.0; k * planner.action_dim()],
            bufs: Buffers::default(),
            planner_ws: P::Workspace::default(),
            act_ws: ActWorkspace::new(),
            final_rows: Vec::with_capacity(k),
            final_obs: Vec::with_capacity(k * od),
            final_bufs: Buffers::default(),
            env,
        };
        c.env.observe(&mut c.obs);
        c
    }

    /// Records the privileged expert's correction at every step (for PPO's expert-guidance
    /// loss, `ppo.expert_coef`): one more expert plan per world and step.
    pub fn record_expert(mut self, on: bool) -> Self {
        self.record_expert = on;
        self
    }

    /// The environment (e.g. to snapshot it).
    pub fn env(&self) -> &E {
        &self.env
    }

    /// Index of the first world in the whole batch.
    pub fn first_world(&self) -> usize {
        self.first_world
    }

    /// How many worlds this collector drives.
    pub fn worlds(&self) -> usize {
        self.env.num_envs()
    }

    /// Per world: the return of its running episode so far (checkpoints store it).
    pub fn running_return(&self) -> &[f32] {
        &self.running_return
    }

    /// Continues from a checkpoint: the environment is already restored; these are its worlds'
    /// running returns.
    pub fn set_running_return(&mut self, returns: &[f32]) -> Result<()> {
        crate::error::check_len("running returns", returns.len(), self.running_return.len())?;
        self.running_return.copy_from_slice(returns);
        Ok(())
    }

    /// Runs `t_len` steps of iteration `iteration` (0-based) with policy `ac` and the action
    /// noise `noise` (standard normal, `[T, k, A]` for this collector's `k` worlds), the
    /// correction scaled by `ramp` and rewards by `reward_scale`, into `part` (its buffers are
    /// reused).
    #[allow(clippy::too_many_arguments)]
    pub fn collect(
        &mut self,
        ac: &ActorCritic,
        noise: &[f32],
        iteration: usize,
        t_len: usize,
        ramp: f32,
        reward_scale: f32,
        part: &mut RolloutPart,
    ) -> Result<()> {
        let mut clock = PhaseClock::start();
        let planner = self.planner;
        let (k, a, d) = (
            self.env.num_envs(),
            planner.action_dim(),
            policy_input_dim(planner),
        );
        let total = k * t_len;
        part.first_world = self.first_world;
        part.worlds = k;
        part.steps = t_len;
        part.x.resize(total * d, 0.0);
        part.u.resize(total * a, 0.0);
        for v in [
            &mut part.logp,
            &mut part.values,
            &mut part.rewards,
            &mut part.next_values,
        ] {
            v.resize(total, 0.0);
        }
        part.terminated.resize(total, false);
        part.truncated.resize(total, false);
        part.expert
            .resize(if self.record_expert { total * a } else { 0 }, 0.0);
        self.expert_plan
            .resize(if self.record_expert { k * a } else { 0 }, 0.0);
        part.ended.clear();
        part.residual_sum.clear();
        part.residual_sum.resize(k, 0.0);
        crate::error::check_len("action noise", noise.len(), total * a)?;
        let shown = iteration + 1;
        for t in 0..t_len {
            let rows = t * k..(t + 1) * k;
            // 1. Frozen planner once per step; its outputs are part of the policy input.
            self.bufs.fill(planner, &mut self.planner_ws, &self.obs)?;
            let at = move || format!("refinement iteration {shown}, rollout step {}", t + 1);
            if let Some(i) = first_bad_row(&self.bufs.wp, a) {
                return Err(LearnError::NonFinite {
                    what: format!("plan of the frozen planner for {}", self.env.world_label(i)),
                    at: at(),
                });
            }
            let bf = &mut self.bufs;
            part.x[rows.start * d..rows.end * d].copy_from_slice(&bf.x);
            clock.lap(|s| &mut s.planner_forward);
            if self.record_expert {
                self.env.expert_actions(&mut self.expert_plan);
                let targets = &mut part.expert[rows.start * a..rows.end * a];
                for (j, ((c, &e), &w)) in targets
                    .iter_mut()
                    .zip(&self.expert_plan)
                    .zip(&bf.wp)
                    .enumerate()
                {
                    *c = ((e - w) / (ramp * ac.max_delta[j % a])).clamp(-1.0, 1.0);
                }
                clock.lap(|s| &mut s.env);
            }
            ac.sample_with_noise(
                &bf.x,
                &noise[rows.start * a..rows.end * a],
                &mut self.act_ws,
                ActOutput {
                    u: &mut part.u[rows.start * a..rows.end * a],
                    delta: &mut bf.delta,
                    logp: &mut part.logp[rows.clone()],
                    value: &mut part.values[rows.clone()],
                },
            )?;
            for (i, ((p, w), dl)) in self
                .plan
                .chunks_exact_mut(a)
                .zip(bf.wp.chunks_exact(a))
                .zip(bf.delta.chunks_exact(a))
                .enumerate()
            {
                let mut sum = 0.0f64;
                for ((p, w), dl) in p.iter_mut().zip(w).zip(dl) {
                    *p = w + ramp * dl;
                    sum += f64::from((ramp * dl).abs());
                }
                part.residual_sum[i] += sum;
            }
            clock.lap(|s| &mut s.policy_forward);
            self.env.step(&self.plan, &mut self.step);
            if deltaplan_stdx::fault::inject_nan(|| "refine:reward".into()) {
                self.step.reward[0] = f32::NAN;
            }
            check_step(&self.env, &self.step, at)?;
            self.obs.copy_from_slice(&self.step.obs);

            // 2. Rewards, flags, bookkeeping of finished episodes.
            self.final_rows.clear();
            for i in 0..k {
                let (r, row) = (self.step.reward[i], rows.start + i);
                part.rewards[row] = r * reward_scale;
                part.terminated[row] = self.step.terminated[i];
                part.truncated[row] = self.step.truncated[i];
                self.running_return[i] += r;
                if self.step.terminated[i] || self.step.truncated[i] {
                    let s = self.env.finished(i);
                    part.ended.push(EndedEpisode {
                        step: t as u32,
                        world: (self.first_world + i) as u32,
                        episode_return: self.running_return[i],
                        driving_score: s.driving_score(),
                        route_completion: s.route_completion,
                        collided: s.had_collision(),
                        offroad: s.offroad > 0,
                    });
                    self.running_return[i] = 0.0;
                    if self.step.truncated[i] {
                        self.final_rows.push(i);
                    }
                }
            }
            clock.lap(|s| &mut s.env);
            // Bootstrap values of truncated episodes' final observations.
            if !self.final_rows.is_empty() {
                let od = planner.obs_dim();
                self.final_obs.clear();
                for &i in &self.final_rows {
                    self.final_obs
                        .extend_from_slice(&self.step.final_obs[i * od..(i + 1) * od]);
                }
                self.final_bufs
                    .fill(planner, &mut self.planner_ws, &self.final_obs)?;
                clock.lap(|s| &mut s.planner_forward);
                let fb = &mut self.final_bufs;
                ac.value(&fb.x, &mut self.act_ws, &mut fb.value)?;
                for (j, &i) in self.final_rows.iter().enumerate() {
                    part.next_values[rows.start + i] = fb.value[j];
                }
                clock.lap(|s| &mut s.policy_forward);
            }
        }
        // V of the observation after the last step.
        self.bufs.fill(planner, &mut self.planner_ws, &self.obs)?;
        clock.lap(|s| &mut s.planner_forward);
        let bf = &mut self.bufs;
        ac.value(&bf.x, &mut self.act_ws, &mut bf.value)?;
        clock.lap(|s| &mut s.policy_forward);
        for row in 0..total {
            if part.truncated[row] {
                continue; // already V(final observation)
            }
            part.next_values[row] = if part.terminated[row] {
                0.0
            } else if row + k < total {
                part.values[row + k]
            } else {
                bf.value[row + k - total]
            };
        }
        part.seconds = clock.seconds;
        Ok(())
    }
}

/// The first row of `[rows, width]` `xs` holding a non-finite value.
fn first_bad_row(xs: &[f32], width: usize) -> Option<usize> {
    xs.chunks_exact(width.max(1))
        .position(|r| r.iter().any(|x| !x.is_finite()))
}

/// Refuses a step whose observations (current or final) or rewards are not finite, naming the
/// world and its scenario: training stops before such a number reaches an update.
fn check_step(env: &impl VecEnv, step: &StepBuffers, at: impl Fn() -> String) -> Result<()> {
    let od = env.obs_dim();
    let bad = |what: String, i: usize| {
        Err(LearnError::NonFinite {
            what: format!("{what} of {}", env.world_label(i)),
            at: at(),
        })
    };
    if let Some(i) = first_bad_row(&step.obs, od) {
        return bad("observation".into(), i);
    }
    for i in 0..env.num_envs() {
        if !step.reward[i].is_finite() {
            return bad(format!("reward {}", step.reward[i]), i);
        }
        if step.truncated[i]
            && step.final_obs[i * od..(i + 1) * od]
                .iter()
                .any(|x| !x.is_finite())
        {
            return bad("final observation".into(), i);
        }
    }
    Ok(())
}

impl<P: FrozenPlanner, E: ResumableEnv + ExpertEnv> Collector<'_, P, E> {
    /// Rebuilds the worlds from a snapshot of them (see [`ResumableEnv`]).
    pub fn restore(&mut self, snap: &EnvSnapshot) -> Result<()> {
        self.env
            .restore(snap)
            .map_err(|e| LearnError::Checkpoint(format!("the training worlds' snapshot: {e}")))?;
        self.env.observe(&mut self.obs);
        Ok(())
    }
}
