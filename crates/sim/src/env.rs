//! The environment seam (an API boundary): what the refinement loop and the closed-loop
//! evaluation need from a simulator, so that another simulator can stand where [`BatchEnv`]
//! stands.
//!
//! The contract, which [`BatchEnv`] keeps and any other implementation must keep:
//! - N worlds, each acting on one plan of `action_dim` floats (H ego-frame waypoints, x
//!   forward, y left, flattened) per step and observed as `obs_dim` floats.
//! - `step` fills caller-owned [`StepBuffers`] (sized by [`StepBuffers::for_env`]) and never
//!   allocates per step. A world whose episode ended this step has `terminated` (no
//!   bootstrapping) or `truncated` (bootstrap from `final_obs`) set, and its record is
//!   available from `finished(i)` until its next episode ends.
//! - Training batches reset ended worlds themselves (`obs` is then the new episode's first
//!   observation); batches over a fixed scenario list run each world once and go idle
//!   (reward 0, flags false), and `all_idle` says when all are done.
//! - Results are a pure function of the construction arguments and the plans: bit-identical
//!   for any thread count.
//! - An environment that can fail beyond repair (an external simulator that will not start
//!   again) says so through `fault` after the step, with its failed worlds idle; the loops
//!   over the seam stop with that message. The built-in world never fails.

use crate::batch::{BatchEnv, EnvSnapshot, SnapshotError, StepBuffers};
use crate::metrics::EpisodeStats;
use crate::spec::ScenarioSpec;

/// A batch of N driving worlds stepped together.
pub trait VecEnv {
    /// Number of worlds N.
    fn num_envs(&self) -> usize;
    /// Length of one world's observation.
    fn obs_dim(&self) -> usize;
    /// Length of one world's plan (2H).
    fn action_dim(&self) -> usize;
    /// Writes the current observations, [N, obs_dim].
    fn observe(&self, obs: &mut [f32]);
    /// Executes one plan per world (`plans`: [N, action_dim]) for one step.
    fn step(&mut self, plans: &[f32], out: &mut StepBuffers);
    /// The record of the episode that most recently ended in world `i`.
    fn finished(&self, i: usize) -> &EpisodeStats;
    /// Whether every world has finished its single episode (fixed scenario lists); never true
    /// for a batch that resets its worlds.
    fn all_idle(&self) -> bool;
    /// World `i` named for a message (which scenario it runs, where the environment knows):
    /// what a non-finite observation or reward is reported against.
    fn world_label(&self, i: usize) -> String {
        format!("world {i}")
    }
    /// Why the environment cannot go on, if it cannot (see the module docs).
    fn fault(&self) -> Option<String> {
        None
    }
}

/// An environment with a privileged expert planner and known scenarios: recording
/// demonstrations (plans and the scenario each episode came from) and the expert baseline.
pub trait ExpertEnv: VecEnv {
    /// Writes the expert's plans for the current state, [N, action_dim].
    fn expert_actions(&self, plans: &mut [f32]);
    /// The scenario of the episode world `i` is running.
    fn scenario(&self, i: usize) -> ScenarioSpec;
}

/// An environment that can be checkpointed and resumed bit for bit.
pub trait ResumableEnv: VecEnv {
    /// What it takes to rebuild the current state.
    fn snapshot(&self) -> EnvSnapshot;
    /// Rebuilds the state of a snapshot taken of an environment built the same way.
    fn restore(&mut self, snapshot: &EnvSnapshot) -> Result<(), SnapshotError>;
}

impl StepBuffers {
    /// Buffers sized for `env`.
    pub fn for_env(env: &(impl VecEnv + ?Sized)) -> Self {
        StepBuffers::with_obs_dim(env.num_envs(), env.obs_dim())
    }
}

impl VecEnv for BatchEnv {
    fn num_envs(&self) -> usize {
        self.len()
    }

    fn obs_dim(&self) -> usize {
        BatchEnv::obs_dim(self)
    }

    fn action_dim(&self) -> usize {
        BatchEnv::action_dim(self)
    }

    fn observe(&self, obs: &mut [f32]) {
        BatchEnv::observe(self, obs)
    }

    fn step(&mut self, plans: &[f32], out: &mut StepBuffers) {
        BatchEnv::step(self, plans, out)
    }

    fn finished(&self, i: usize) -> &EpisodeStats {
        BatchEnv::finished(self, i)
    }

    fn all_idle(&self) -> bool {
        BatchEnv::all_idle(self)
    }

    fn world_label(&self, i: usize) -> String {
        let spec = self.world(i).spec;
        format!(
            "world {} (scenario {} seed {})",
            self.first_world() + i,
            spec.family.name(),
            spec.seed
        )
    }
}

impl ExpertEnv for BatchEnv {
    fn expert_actions(&self, plans: &mut [f32]) {
        BatchEnv::expert_actions(self, plans)
    }

    fn scenario(&self, i: usize) -> ScenarioSpec {
        self.world(i).spec
    }
}

impl ResumableEnv for BatchEnv {
    fn snapshot(&self) -> EnvSnapshot {
        BatchEnv::snapshot(self)
    }

    fn restore(&mut self, snapshot: &EnvSnapshot) -> Result<(), SnapshotError> {
        BatchEnv::restore(self, snapshot)
    }
}
