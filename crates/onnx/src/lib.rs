//! ONNX in, ONNX out: bring your own planner.
//!
//! - [`spec`]: the planner spec (observation kind, outputs, horizon, normalisation), in the
//!   model's metadata or a sidecar TOML;
//! - [`planner`]: [`OnnxPlanner`], any ONNX planner as the frozen planner refinement builds on
//!   (`deltaplan_learn::planner::FrozenPlanner`), run by tract;
//! - [`export`]: the built-in SFT planner and the refined planner (frozen + residual) written
//!   as single ONNX graphs;
//! - [`error`]: why a model was refused, naming the mismatch and the fix.

pub mod error;
pub mod export;
pub mod planner;
pub mod spec;

pub use error::{OnnxError, Result};
pub use export::{export_refined, export_sft, Frozen, Residual};
pub use planner::{BatchDim, OnnxPlanner, OnnxWorkspace, CHUNK_ROWS};
pub use spec::{ObservationKind, PlannerSpec, SPEC_KEY};
