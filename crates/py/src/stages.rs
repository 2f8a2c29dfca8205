//! The product's stages from Python: the CLI's own functions (`deltaplan::pipeline`) on the
//! CLI's configuration, reading and writing the same files in the run directory, so a run
//! started from Python can be continued, evaluated or reported by the CLI and back.
//!
//! Every stage runs without the GIL, in a thread pool of `num_threads` threads (0: rayon's
//! global pool, all cores), as `deltaplan --threads N` does; results are bit-identical to the
//! CLI's for the same configuration, seed and thread count.

use std::path::{Path, PathBuf};

use deltaplan::config::Config;
use deltaplan::pipeline;
use deltaplan_eval::Policy;
use deltaplan_sim::Split;
use pyo3::prelude::*;

use crate::settings::config_from_json;
use crate::{ConfigError, StageError};

/// A stage's failure as a Python exception, with the CLI's message (every cause).
pub fn stage_error(e: anyhow::Error) -> PyErr {
    StageError::new_err(format!("{e:#}"))
}

/// Runs `stage` on the run directory `out_dir` with the configuration `settings_json`, without
/// the GIL, in a pool of `num_threads` threads (0: the global pool).
pub fn with_run<T: Send>(
    py: Python<'_>,
    run: RunDir<'_>,
    stage: impl FnOnce(&Config, &Path) -> anyhow::Result<T> + Send,
) -> PyResult<T> {
    let cfg = config_from_json(run.settings_json)?;
    let out = PathBuf::from(run.out_dir);
    let pool = crate::settings::thread_pool(run.num_threads)?;
    py.detach(|| {
        let go = || stage(&cfg, &out);
        match &pool {
            Some(p) => p.install(go),
            None => go(),
        }
    })
    .map_err(stage_error)
}

/// [`with_run`] for a stage command: the directory must hold this configuration's run (or
/// none), as the CLI's `guard` checks before every stage.
pub fn guarded<T: Send>(
    py: Python<'_>,
    run: RunDir<'_>,
    stage: impl FnOnce(&Config, &Path) -> anyhow::Result<T> + Send,
) -> PyResult<T> {
    with_run(py, run, |cfg, out| {
        let _lock = pipeline::guard(cfg, out)?;
        stage(cfg, out)
    })
}

/// Where and how a stage runs: the run directory, the configuration (JSON of the CLI's
/// sections) and the thread count.
#[derive(Clone, Copy)]
pub struct RunDir<'a> {
    pub out_dir: &'a str,
    pub settings_json: &'a str,
    pub num_threads: usize,
}

/// `deltaplan run`: every stage in order, resuming what a previous run of the same
/// configuration left; returns the path of report.md.
#[pyfunction]
#[pyo3(signature = (out_dir, settings_json, num_threads=0))]
pub fn run(
    py: Python<'_>,
    out_dir: &str,
    settings_json: &str,
    num_threads: usize,
) -> PyResult<String> {
    let dir = RunDir {
        out_dir,
        settings_json,
        num_threads,
    };
    with_run(py, dir, |cfg, out| {
        pipeline::run_all(cfg, out)?;
        Ok(out.join("report.md").display().to_string())
    })
}

/// `deltaplan record`: expert demonstrations into `out_dir/demos.safetensors`.
#[pyfunction]
#[pyo3(signature = (out_dir, settings_json, num_threads=0))]
pub fn record(
    py: Python<'_>,
    out_dir: &str,
    settings_json: &str,
    num_threads: usize,
) -> PyResult<()> {
    let dir = RunDir {
        out_dir,
        settings_json,
        num_threads,
    };
    guarded(py, dir, pipeline::record)
}

/// `deltaplan train-sft`: behaviour cloning into `out_dir/sft.safetensors`; returns its path.
#[pyfunction]
#[pyo3(signature = (out_dir, settings_json, num_threads=0))]
pub fn train_sft(
    py: Python<'_>,
    out_dir: &str,
    settings_json: &str,
    num_threads: usize,
) -> PyResult<String> {
    let dir = RunDir {
        out_dir,
        settings_json,
        num_threads,
    };
    guarded(py, dir, |cfg, out| {
        pipeline::train_sft(cfg, out)?;
        Ok(out.join("sft.safetensors").display().to_string())
    })
}

/// `deltaplan refine`: PPO refinement of the run's frozen planner into
/// `out_dir/rl.safetensors` (resuming a checkpoint of the same configuration).
#[pyfunction]
#[pyo3(signature = (out_dir, settings_json, num_threads=0))]
pub fn refine(
    py: Python<'_>,
    out_dir: &str,
    settings_json: &str,
    num_threads: usize,
) -> PyResult<String> {
    let dir = RunDir {
        out_dir,
        settings_json,
        num_threads,
    };
    guarded(py, dir, |cfg, out| {
        pipeline::refine(cfg, out)?;
        Ok(out.join("rl.safetensors").display().to_string())
    })
}

/// `deltaplan evaluate --policy POLICY --split SPLIT`: returns the evaluation file's path.
#[pyfunction]
#[pyo3(signature = (out_dir, settings_json, policy, split="eval", num_threads=0))]
pub fn evaluate_policy(
    py: Python<'_>,
    out_dir: &str,
    settings_json: &str,
    policy: &str,
    split: &str,
    num_threads: usize,
) -> PyResult<String> {
    let policy = Policy::ALL
        .into_iter()
        .find(|p| p.name() == policy)
        .ok_or_else(|| {
            ConfigError::new_err(format!(
                "policy must be \"expert\", \"sft\" or \"rl\", got {policy:?}"
            ))
        })?;
    let split = parse_split(split)?;
    let dir = RunDir {
        out_dir,
        settings_json,
        num_threads,
    };
    guarded(py, dir, |cfg, out| {
        Ok(pipeline::evaluate(cfg, out, policy, split)?
            .display()
            .to_string())
    })
}

/// `deltaplan report`: report.md, report.json and figures (evaluating what is missing);
/// returns the path of report.md.
#[pyfunction]
#[pyo3(signature = (out_dir, settings_json, num_threads=0))]
pub fn report(
    py: Python<'_>,
    out_dir: &str,
    settings_json: &str,
    num_threads: usize,
) -> PyResult<String> {
    let dir = RunDir {
        out_dir,
        settings_json,
        num_threads,
    };
    guarded(py, dir, |cfg, out| {
        let (path, _) = pipeline::report(cfg, out, None)?;
        Ok(path.display().to_string())
    })
}

/// `deltaplan record` then `deltaplan train-sft` into `out_dir`; returns the path of
/// `sft.safetensors` (what a residual environment loads) and the best validation ADE (metres,
/// from `sft_report.json`).
#[pyfunction]
pub fn record_and_train_sft(
    py: Python<'_>,
    out_dir: &str,
    settings_json: &str,
) -> PyResult<(String, f32)> {
    let dir = RunDir {
        out_dir,
        settings_json,
        num_threads: 0,
    };
    guarded(py, dir, |cfg, out| {
        pipeline::record(cfg, out)?;
        pipeline::train_sft(cfg, out)?;
        #[derive(serde::Deserialize)]
        struct SftReport {
            best_val_ade: f32,
        }
        let report: SftReport =
            serde_json::from_str(&std::fs::read_to_string(out.join("sft_report.json"))?)?;
        Ok((
            out.join("sft.safetensors").display().to_string(),
            report.best_val_ade,
        ))
    })
}

/// "eval" or "hard".
pub fn parse_split(split: &str) -> PyResult<Split> {
    match split {
        "eval" => Ok(Split::Eval),
        "hard" => Ok(Split::Hard),
        other => Err(ConfigError::new_err(format!(
            "split must be \"eval\" or \"hard\", got {other:?}"
        ))),
    }
}
