//! The residual's input: `x = [z, W / scale, normalised obs]`, built from the frozen planner's
//! embedding `z` and plan `W` and the observation; shared by the rollout and the refined
//! planner so both feed the actor-critic the same numbers.

use crate::error::Result;
use crate::planner::FrozenPlanner;

/// Waypoints enter the policy input divided by these (x forward, y left), so they are O(1);
/// public because the ONNX export of the refined planner repeats the division.
pub const WAYPOINT_SCALE: [f32; 2] = [20.0, 5.0];

/// Width of the policy input on top of `planner`: its embedding, its plan, the observation.
pub fn policy_input_dim(planner: &impl FrozenPlanner) -> usize {
    planner.embedding_dim() + planner.action_dim() + planner.residual_obs_dim()
}

/// Writes the policy input `x = [z, W / scale, normalised obs]` for a batch: the planner's
/// embedding `z` and plan `W`, the observation's first `residual_obs_dim` features normalised
/// with the planner's statistics.
pub(crate) fn build_policy_input(
    planner: &impl FrozenPlanner,
    z: &[f32],
    wp: &[f32],
    obs: &[f32],
    x: &mut [f32],
) {
    let (z_dim, a, od) = (
        planner.embedding_dim(),
        planner.action_dim(),
        planner.obs_dim(),
    );
    let (mean, std) = planner.obs_normalisation();
    let d = policy_input_dim(planner);
    for (i, row) in x.chunks_exact_mut(d).enumerate() {
        row[..z_dim].copy_from_slice(&z[i * z_dim..(i + 1) * z_dim]);
        for (k, (o, w)) in row[z_dim..z_dim + a]
            .iter_mut()
            .zip(&wp[i * a..(i + 1) * a])
            .enumerate()
        {
            *o = w / WAYPOINT_SCALE[k % 2];
        }
        for (k, o) in row[z_dim + a..].iter_mut().enumerate() {
            *o = (obs[i * od + k] - mean[k]) / std[k];
        }
    }
}

/// Reusable per-batch buffers of the planner pipeline.
#[derive(Default)]
pub(crate) struct Buffers {
    pub(crate) z: Vec<f32>,
    pub(crate) wp: Vec<f32>,
    pub(crate) x: Vec<f32>,
    pub(crate) u: Vec<f32>,
    pub(crate) delta: Vec<f32>,
    pub(crate) logp: Vec<f32>,
    pub(crate) value: Vec<f32>,
}

impl Buffers {
    /// Sizes every buffer for a batch of `b` observations of `planner`.
    pub(crate) fn resize(&mut self, b: usize, planner: &impl FrozenPlanner) {
        let (z_dim, a, d) = (
            planner.embedding_dim(),
            planner.action_dim(),
            policy_input_dim(planner),
        );
        self.z.resize(b * z_dim, 0.0);
        self.wp.resize(b * a, 0.0);
        self.x.resize(b * d, 0.0);
        self.u.resize(b * a, 0.0);
        self.delta.resize(b * a, 0.0);
        self.logp.resize(b, 0.0);
        self.value.resize(b, 0.0);
    }

    /// Runs the frozen planner on `obs` and builds the policy input, sized for its batch.
    pub(crate) fn fill<P: FrozenPlanner>(
        &mut self,
        planner: &P,
        ws: &mut P::Workspace,
        obs: &[f32],
    ) -> Result<()> {
        self.resize(obs.len() / planner.obs_dim().max(1), planner);
        planner.plan_batch(obs, ws, &mut self.wp, &mut self.z)?;
        build_policy_input(planner, &self.z, &self.wp, obs, &mut self.x);
        Ok(())
    }
}
