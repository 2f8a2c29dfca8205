//! The frozen planner seam: what the refinement loop (and evaluation) needs from the planner it
//! refines, so that a planner loaded from another format can stand where the built-in SFT
//! planner stands.
//!
//! The residual policy's input is built from what the planner declares: its embedding (if it
//! exposes one, `embedding_dim > 0`), its plan, and the observation normalised with the
//! statistics it provides: `x = [embedding, plan / scale, (obs - mean) / std]`.
//!
//! A planner that reads a bird's-eye-view raster declares it ([`FrozenPlanner::bev_observation`]):
//! its observations are then the vector followed by the raster
//! (`deltaplan_sim::BatchEnv::with_bev_observation`), and the residual reads only the vector
//! part ([`FrozenPlanner::residual_obs_dim`]), so its size does not grow with the raster.

use deltaplan_sim::BevSpec;

/// A planner failure, typed so that callers can tell a caller's mistake from a backend error.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlannerError {
    /// Input or output buffers that do not fit the batch (a caller's mistake).
    #[error("planner buffers do not fit the batch: {0}")]
    Shape(String),
    /// The planner itself failed (e.g. an inference runtime error).
    #[error("planner failed: {0}")]
    Failed(String),
}

/// A frozen planner: observations in, `horizon` waypoints out per observation, plus an
/// optional embedding. Deterministic and never trained by the refinement.
pub trait FrozenPlanner: Sync {
    /// Caller-owned scratch memory of [`FrozenPlanner::plan_batch`] (grows to the largest batch,
    /// then allocates nothing).
    type Workspace: Default + Send;

    /// Width of one observation.
    fn obs_dim(&self) -> usize;

    /// Waypoints H per plan; a plan is `2H` floats `(x0, y0, x1, y1, ...)`, ego frame, metres.
    fn horizon(&self) -> usize;

    /// Width of the embedding it writes per observation (0 if it exposes none).
    fn embedding_dim(&self) -> usize;

    /// Plans for a batch: `obs` `[B, obs_dim]` -> `plans_out` `[B, 2H]` and `embedding_out`
    /// `[B, embedding_dim]`.
    fn plan_batch(
        &self,
        obs: &[f32],
        ws: &mut Self::Workspace,
        plans_out: &mut [f32],
        embedding_out: &mut [f32],
    ) -> Result<(), PlannerError>;

    /// Per-feature `(mean, std)`, each `[residual_obs_dim]`, with which the residual's input
    /// normalises observations (a planner without its own statistics returns zeros and ones).
    fn obs_normalisation(&self) -> (&[f32], &[f32]);

    /// The raster each observation carries after the vector, for a planner that reads one
    /// (`obs_dim` then counts the raster's floats too); `None`: the vector only.
    fn bev_observation(&self) -> Option<BevSpec> {
        None
    }

    /// The leading features of each observation the residual reads: all of them, or the
    /// vector part of an observation that carries a raster.
    fn residual_obs_dim(&self) -> usize {
        self.obs_dim()
    }

    /// Identifies the weights: stored in every refinement checkpoint and checked on resume and
    /// evaluation, so a residual is never applied to another planner.
    fn weights_hash(&self) -> String;

    /// Floats per plan, `2H`.
    fn action_dim(&self) -> usize {
        2 * self.horizon()
    }
}
