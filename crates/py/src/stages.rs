//! Pipeline stages from Python: recording expert demonstrations and behaviour cloning, with the
//! CLI's settings and file formats (the `sft.safetensors` written here is the one
//! `deltaplan train-sft` writes, and what a residual environment loads).

use deltaplan_learn::dataset::record_demonstrations;
use deltaplan_learn::{train_sft, Recording};
use pyo3::prelude::*;
use std::path::Path;

use crate::settings::Settings;
use crate::{CheckpointError, ConfigError};

/// Records demonstrations (`demos`, `train_scenarios`, `sim`, `seed`) into `out_dir`, trains
/// the SFT planner on them (`sft`) and writes `out_dir/sft.safetensors`; returns its path and
/// the best validation ADE (metres). Runs without the GIL.
#[pyfunction]
pub fn record_and_train_sft(
    py: Python<'_>,
    out_dir: &str,
    settings_json: &str,
) -> PyResult<(String, f32)> {
    let s = Settings::from_json(settings_json)?;
    let dir = Path::new(out_dir).to_path_buf();
    py.detach(move || {
        std::fs::create_dir_all(&dir)
            .map_err(|e| ConfigError::new_err(format!("{}: {e}", dir.display())))?;
        let recording = Recording {
            sim: s.sim,
            seed: s.seed,
            scenarios: s.train_scenarios.clone(),
            demos: s.demos.clone(),
        };
        let fail = |e: deltaplan_learn::LearnError| CheckpointError::new_err(e.to_string());
        let ds = record_demonstrations(&recording, |_| {}).map_err(fail)?;
        ds.save(&dir).map_err(fail)?;
        let (planner, report) = train_sft(&s.sft, &ds, s.seed, |_| {}).map_err(fail)?;
        let path = dir.join("sft.safetensors");
        planner.save(&path).map_err(fail)?;
        Ok((path.display().to_string(), report.best_val_ade))
    })
}
