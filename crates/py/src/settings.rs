//! The configuration Python passes: the CLI's sections (`seed`, `sim`, `train_scenarios`,
//! `demos`, `sft`, `refine`) with the CLI's field names and defaults, as a JSON string built
//! by the Python side from a nested or dotted (`"sim.reward.comfort_penalty"`) dict. Unknown
//! keys and out-of-range values are refused with a [`ConfigError`] naming the field.

use deltaplan_learn::refine::RefineConfig;
use deltaplan_learn::{DemoConfig, SftTrainConfig, TrainScenarios};
use deltaplan_sim::{Difficulty, SimConfig};
use pyo3::prelude::*;
use serde::{Deserialize, Serialize};

use crate::ConfigError;

/// The sections of the CLI's configuration that the Python side uses.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Seeds recording and behaviour cloning (environments take theirs from `reset(seed=...)`).
    pub seed: u64,
    pub sim: SimConfig,
    pub train_scenarios: TrainScenarios,
    pub demos: DemoConfig,
    pub sft: SftTrainConfig,
    /// Only `refine.max_delta` is read by the environments (the residual action's bound).
    pub refine: RefineConfig,
    pub eval: EvalSettings,
}

/// The CLI's `[eval]` section: the evaluation suites (`examples` is accepted and unused here).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalSettings {
    pub per_family: usize,
    pub difficulty: Difficulty,
    pub examples: usize,
}

impl Default for EvalSettings {
    fn default() -> Self {
        EvalSettings {
            per_family: 40,
            difficulty: Difficulty::default(),
            examples: 3,
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            seed: 1,
            sim: SimConfig::default(),
            train_scenarios: TrainScenarios::default(),
            demos: DemoConfig::default(),
            sft: SftTrainConfig::default(),
            refine: RefineConfig::default(),
            eval: EvalSettings::default(),
        }
    }
}

impl Settings {
    /// Parses and validates; every failure is a [`ConfigError`] that names the field.
    pub fn from_json(json: &str) -> PyResult<Settings> {
        let s: Settings = serde_json::from_str(json)
            .map_err(|e| ConfigError::new_err(format!("bad configuration: {e}")))?;
        let fail = |e: String| ConfigError::new_err(e);
        s.sim.validate().map_err(|e| fail(e.to_string()))?;
        s.train_scenarios
            .validate()
            .map_err(|e| fail(e.to_string()))?;
        s.demos.validate().map_err(|e| fail(e.to_string()))?;
        s.sft.validate().map_err(|e| fail(e.to_string()))?;
        s.refine.validate().map_err(|e| fail(e.to_string()))?;
        s.eval
            .difficulty
            .validate()
            .map_err(|e| fail(format!("eval.difficulty: {e}")))?;
        Ok(s)
    }
}

/// Every setting with its default, as JSON (what `deltaplan config` prints, for these sections).
#[pyfunction]
pub fn default_settings_json() -> PyResult<String> {
    serde_json::to_string(&Settings::default()).map_err(|e| ConfigError::new_err(e.to_string()))
}
