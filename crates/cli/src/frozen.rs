//! The frozen planner of a run: the built-in SFT planner (`OUT/sft.safetensors`), or the ONNX
//! planner the configuration names (`planner = "FILE.onnx"`, or `--planner`). One type, so the
//! stages (refine, evaluate, render, report, export) are written once for both.

use deltaplan_learn::sft::{SftPlanner, SftWorkspace};
use deltaplan_learn::{FrozenPlanner, PlannerError};
use deltaplan_onnx::{OnnxPlanner, OnnxWorkspace};
use deltaplan_sim::BevSpec;

/// The planner the residual refines.
pub enum Frozen {
    Sft(SftPlanner),
    Onnx(OnnxPlanner),
}

/// Scratch memory of either planner.
#[derive(Default)]
pub struct FrozenWorkspace {
    sft: SftWorkspace,
    onnx: OnnxWorkspace,
}

impl FrozenPlanner for Frozen {
    type Workspace = FrozenWorkspace;

    fn obs_dim(&self) -> usize {
        match self {
            Frozen::Sft(p) => FrozenPlanner::obs_dim(p),
            Frozen::Onnx(p) => p.obs_dim(),
        }
    }

    fn horizon(&self) -> usize {
        match self {
            Frozen::Sft(p) => FrozenPlanner::horizon(p),
            Frozen::Onnx(p) => p.horizon(),
        }
    }

    fn embedding_dim(&self) -> usize {
        match self {
            Frozen::Sft(p) => p.embedding_dim(),
            Frozen::Onnx(p) => p.embedding_dim(),
        }
    }

    fn plan_batch(
        &self,
        obs: &[f32],
        ws: &mut FrozenWorkspace,
        plans_out: &mut [f32],
        embedding_out: &mut [f32],
    ) -> Result<(), PlannerError> {
        match self {
            Frozen::Sft(p) => p.plan_batch(obs, &mut ws.sft, plans_out, embedding_out),
            Frozen::Onnx(p) => p.plan_batch(obs, &mut ws.onnx, plans_out, embedding_out),
        }
    }

    fn obs_normalisation(&self) -> (&[f32], &[f32]) {
        match self {
            Frozen::Sft(p) => p.obs_normalisation(),
            Frozen::Onnx(p) => p.obs_normalisation(),
        }
    }

    fn bev_observation(&self) -> Option<BevSpec> {
        match self {
            Frozen::Sft(p) => p.bev_observation(),
            Frozen::Onnx(p) => p.bev_observation(),
        }
    }

    fn residual_obs_dim(&self) -> usize {
        match self {
            Frozen::Sft(p) => p.residual_obs_dim(),
            Frozen::Onnx(p) => p.residual_obs_dim(),
        }
    }

    fn weights_hash(&self) -> String {
        match self {
            Frozen::Sft(p) => FrozenPlanner::weights_hash(p),
            Frozen::Onnx(p) => p.weights_hash(),
        }
    }
}
