//! Why an ONNX planner was refused: each variant names the mismatch and the fix.

/// An ONNX planner that cannot be loaded, planned with or exported.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is not a readable ONNX model ({reason}): the file is corrupted or truncated, or \
         not ONNX; export it again (torch.onnx.export, or `deltaplan export`)"
    )]
    Corrupt { path: String, reason: String },
    #[error(
        "{path} has no deltaplan planner spec: add `{sidecar}` (see the README, \"Bring your own \
         planner\") or store the spec's TOML in the model's metadata_props under `{key}`"
    )]
    MissingSpec {
        path: String,
        sidecar: String,
        key: &'static str,
    },
    #[error("the planner spec of {path} ({source_of_spec}) is invalid: {reason}")]
    BadSpec {
        path: String,
        source_of_spec: String,
        reason: String,
    },
    #[error("{path}: {what} is not supported yet: {fix}")]
    Unsupported {
        path: String,
        what: String,
        fix: String,
    },
    #[error(
        "{path}: operator `{op}` (node `{node}`) is not supported by tract, the ONNX runtime \
         deltaplan embeds: export the model without it (e.g. a lower opset, or replace the \
         layer by supported operators; tract lists them in its README)"
    )]
    UnsupportedOperator {
        path: String,
        op: String,
        node: String,
    },
    #[error(
        "{path}: input `{input}` has shape {found}, but the {kind} observation is {expected}: \
         export the model with input shape {expected} (batch dimension symbolic or fixed)"
    )]
    InputShape {
        path: String,
        input: String,
        kind: &'static str,
        found: String,
        expected: String,
    },
    #[error(
        "{path}: the spec names {role} output `{name}` but the graph's outputs are [{available}]: \
         name one of them in the spec, or export the model with that output"
    )]
    MissingOutput {
        path: String,
        role: &'static str,
        name: String,
        available: String,
    },
    #[error(
        "{path}: the planner plans {found} waypoints {found_dt} s apart (according to {according}) \
         but the simulator expects {expected} waypoints {expected_dt} s apart (sim.horizon, \
         sim.controller.waypoint_dt): retrain the planner for this horizon, or run with those \
         simulator settings"
    )]
    Horizon {
        path: String,
        found: usize,
        according: String,
        found_dt: f32,
        expected: usize,
        expected_dt: f32,
    },
    #[error("{path}: output `{name}` has shape {found}, expected {expected}: {fix}")]
    OutputShape {
        path: String,
        name: String,
        found: String,
        expected: String,
        fix: &'static str,
    },
    #[error("{path}: tract cannot {stage} the model: {message}")]
    Tract {
        path: String,
        stage: &'static str,
        message: String,
    },
    #[error("cannot export: {0}")]
    Export(String),
}

pub type Result<T> = std::result::Result<T, OnnxError>;
