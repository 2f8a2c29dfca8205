//! The planner spec: what deltaplan needs to know about an ONNX planner that the graph alone
//! does not say (which observation it consumes, which output holds the waypoints and at what
//! spacing, an optional embedding, the statistics the residual normalises observations with).
//!
//! It is TOML, stored either in the model's `metadata_props` under [`SPEC_KEY`] (what
//! `deltaplan export` writes, so an exported file is self-contained) or in a sidecar file
//! beside the model (`my_planner.onnx` -> `my_planner.toml`, what a PyTorch user writes by
//! hand). Exactly one of the two: a model with both is refused, so there is never a question
//! which one counts.
//!
//! ```toml
//! version = 1
//! [observation]
//! kind = "vector"          # deltaplan's 142-float vector (crates/sim/src/obs.rs), or "bev"
//! input = "obs"            # graph input, [batch, 142] (batch symbolic or fixed)
//! # kind = "bev": `input` is the raster, [batch, 9, H, W] float32 in [0, 1] (crates/sim/src/bev.rs)
//! # vector_input = "obs"   # optional second input: the 142-float vector beside the raster
//! # [observation.bev]      # the raster: height, width, metres_per_pixel, behind_m
//! # height = 64
//! [output]
//! waypoints = "waypoints"  # graph output, [batch, H, 2] or [batch, 2H]: ego frame, metres
//! horizon = 10             # H, must equal sim.horizon
//! waypoint_dt = 0.2        # seconds between waypoints, must equal sim.controller.waypoint_dt
//! embedding = "z"          # optional graph output [batch, E] the residual reads
//! [normalisation]          # optional: (obs - mean) / std in the residual's input
//! obs_mean = [0.0, ...]    # 142 values
//! obs_std = [1.0, ...]     # 142 values, positive
//! ```

use std::path::{Path, PathBuf};

use deltaplan_sim::BevSpec;
use serde::{Deserialize, Serialize};

/// The `metadata_props` key holding the spec's TOML text.
pub const SPEC_KEY: &str = "deltaplan.spec";
/// Version of the spec this build reads and writes.
pub const SPEC_VERSION: u32 = 1;

/// Which observation an ONNX planner consumes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObservationKind {
    /// deltaplan's vector observation (`deltaplan_sim::obs::LAYOUT`, `OBS_DIM` floats).
    Vector,
    /// A bird's-eye-view raster (`[C, H, W]`, `deltaplan_sim::bev`), optionally with the
    /// vector beside it.
    Bev,
}

impl ObservationKind {
    pub fn name(self) -> &'static str {
        match self {
            ObservationKind::Vector => "vector",
            ObservationKind::Bev => "bev",
        }
    }
}

/// The observation a planner consumes and the graph input it arrives at.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObservationSpec {
    pub kind: ObservationKind,
    /// Graph input name (of the raster, for `bev`); `None`: the graph's only input (for `bev`:
    /// the one input that is not `vector_input`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// `bev` only: the raster's size, resolution and ego placement (required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bev: Option<BevSpec>,
    /// `bev` only: the graph input that receives the vector observation beside the raster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vector_input: Option<String>,
}

/// The graph outputs deltaplan reads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    /// Graph output holding the waypoints, `[batch, H, 2]` or `[batch, 2H]`, ego frame, metres.
    pub waypoints: String,
    /// Waypoints per plan.
    pub horizon: usize,
    /// Seconds between waypoints.
    pub waypoint_dt: f32,
    /// Graph output `[batch, E]` the residual policy reads beside the plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding: Option<String>,
}

/// Per-feature observation statistics the residual's input is normalised with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Normalisation {
    pub obs_mean: Vec<f32>,
    pub obs_std: Vec<f32>,
}

/// What deltaplan needs to know about an ONNX planner (see the module docs).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlannerSpec {
    pub version: u32,
    pub observation: ObservationSpec,
    pub output: OutputSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalisation: Option<Normalisation>,
}

impl PlannerSpec {
    /// Parses and checks a spec's TOML text; the error says what is wrong (the caller adds where).
    pub fn parse(text: &str) -> Result<Self, String> {
        let spec: PlannerSpec = toml::from_str(text).map_err(|e| e.to_string())?;
        if spec.version != SPEC_VERSION {
            return Err(format!(
                "spec version {} is not the version {SPEC_VERSION} this build reads",
                spec.version
            ));
        }
        let o = &spec.observation;
        match (o.kind, &o.bev) {
            (ObservationKind::Bev, None) => {
                return Err(
                    "observation.kind = \"bev\" needs [observation.bev] (height, \
                            width, metres_per_pixel, behind_m)"
                        .into(),
                )
            }
            (ObservationKind::Bev, Some(b)) => {
                b.validate().map_err(|e| format!("observation.bev: {e}"))?
            }
            (ObservationKind::Vector, Some(_)) => {
                return Err(
                    "observation.bev is for kind = \"bev\"; this spec says \"vector\"".into(),
                )
            }
            (ObservationKind::Vector, None) => {}
        }
        if o.kind == ObservationKind::Vector && o.vector_input.is_some() {
            return Err(
                "observation.vector_input is for kind = \"bev\" (kind \"vector\" uses `input`)"
                    .into(),
            );
        }
        if o.vector_input.is_some() && o.vector_input == o.input {
            return Err(
                "observation.input and observation.vector_input name the same input".into(),
            );
        }
        if spec.output.horizon == 0 {
            return Err("output.horizon must be at least 1".into());
        }
        if !(spec.output.waypoint_dt > 0.0 && spec.output.waypoint_dt.is_finite()) {
            return Err(format!(
                "output.waypoint_dt = {} must be a positive number of seconds",
                spec.output.waypoint_dt
            ));
        }
        if let Some(n) = &spec.normalisation {
            if n.obs_mean.iter().any(|v| !v.is_finite()) {
                return Err("normalisation.obs_mean must be finite".into());
            }
            if n.obs_std.iter().any(|&v| !(v > 0.0 && v.is_finite())) {
                return Err("normalisation.obs_std must be positive and finite".into());
            }
        }
        Ok(spec)
    }

    /// The spec as TOML text (what [`SPEC_KEY`] holds).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }
}

/// The sidecar spec file of `model`: the same path with the extension `.toml`.
pub fn sidecar_path(model: &Path) -> PathBuf {
    model.with_extension("toml")
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
version = 1
[observation]
kind = "vector"
[output]
waypoints = "wp"
horizon = 10
waypoint_dt = 0.2
"#;

    #[test]
    fn a_minimal_spec_parses_and_round_trips() {
        let spec = PlannerSpec::parse(MINIMAL).unwrap();
        assert_eq!(spec.observation.kind, ObservationKind::Vector);
        assert_eq!(spec.observation.input, None);
        assert_eq!(spec.output.embedding, None);
        assert_eq!(PlannerSpec::parse(&spec.to_toml()).unwrap(), spec);
    }

    #[test]
    fn wrong_versions_unknown_fields_and_bad_values_are_refused_by_name() {
        let err = PlannerSpec::parse(&MINIMAL.replace("version = 1", "version = 7")).unwrap_err();
        assert!(err.contains("spec version 7"), "{err}");
        let err = PlannerSpec::parse(&format!("{MINIMAL}colour = 1\n")).unwrap_err();
        assert!(err.contains("colour"), "{err}");
        let err = PlannerSpec::parse(&MINIMAL.replace("horizon = 10", "horizon = 0")).unwrap_err();
        assert!(err.contains("output.horizon"), "{err}");
        let err = PlannerSpec::parse(&MINIMAL.replace("\"vector\"", "\"lidar\"")).unwrap_err();
        assert!(err.contains("lidar"), "{err}");
        let with_std = format!("{MINIMAL}[normalisation]\nobs_mean = [0.0]\nobs_std = [0.0]\n");
        let err = PlannerSpec::parse(&with_std).unwrap_err();
        assert!(err.contains("obs_std"), "{err}");
    }

    #[test]
    fn a_bev_spec_needs_its_raster_and_keeps_vector_fields_to_bev() {
        let bev = MINIMAL.replace(
            "kind = \"vector\"",
            "kind = \"bev\"\nvector_input = \"obs\"",
        );
        let err = PlannerSpec::parse(&bev).unwrap_err();
        assert!(err.contains("[observation.bev]"), "{err}");
        let with_raster = bev.replace(
            "[output]",
            "[observation.bev]\nheight = 32\nwidth = 24\nmetres_per_pixel = 1.0\nbehind_m = 4.0\n[output]",
        );
        let spec = PlannerSpec::parse(&with_raster).unwrap();
        assert_eq!(spec.observation.bev.map(|b| b.len()), Some(9 * 32 * 24));
        assert_eq!(spec.observation.vector_input.as_deref(), Some("obs"));
        assert_eq!(PlannerSpec::parse(&spec.to_toml()).unwrap(), spec);
        let err =
            PlannerSpec::parse(&with_raster.replace("height = 32", "height = 2")).unwrap_err();
        assert!(
            err.contains("observation.bev") && err.contains("height"),
            "{err}"
        );
        let vector_with_raster = with_raster.replace("kind = \"bev\"", "kind = \"vector\"");
        let err = PlannerSpec::parse(&vector_with_raster).unwrap_err();
        assert!(err.contains("observation.bev is for kind"), "{err}");
        let same = with_raster.replace(
            "vector_input = \"obs\"",
            "vector_input = \"obs\"\ninput = \"obs\"",
        );
        let err = PlannerSpec::parse(&same).unwrap_err();
        assert!(err.contains("same input"), "{err}");
    }

    #[test]
    fn the_sidecar_sits_beside_the_model() {
        assert_eq!(
            sidecar_path(Path::new("dir/my_planner.onnx")),
            Path::new("dir/my_planner.toml")
        );
    }
}
