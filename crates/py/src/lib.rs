//! deltaplan from Python: the Rust batch of driving worlds behind a small native class
//! ([`batch::Batch`]), which the pure-Python package `deltaplan` (crates/py/python) wraps into a
//! `gymnasium.Env`, a `gymnasium.vector.VectorEnv` and a Stable-Baselines3 `VecEnv`.
//!
//! Why a native class and Python wrappers: a `#[pyclass]` cannot subclass a Python class, so
//! the gymnasium and SB3 classes are thin Python wrappers over this module (`deltaplan._native`).
//!
//! Modules: [`settings`] (the CLI's configuration, from a JSON string),
//! [`batch`] (the environment class: action modes, autoreset modes, episode records),
//! [`raster`] (RGB rendering), [`stages`] (the CLI's pipeline stages from Python),
//! [`pyplanner`] (a Python callable as the frozen planner a refinement refines).

pub mod batch;
pub mod distributed;
pub mod pyplanner;
pub mod raster;
pub mod settings;
pub mod stages;

use pyo3::create_exception;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;

create_exception!(
    deltaplan,
    ConfigError,
    PyValueError,
    "A configuration key or value deltaplan refuses (the message names the field)."
);
create_exception!(
    deltaplan,
    ActionError,
    PyValueError,
    "An action of the wrong shape or dtype, or with non-finite values."
);
create_exception!(
    deltaplan,
    ClosedError,
    PyRuntimeError,
    "The environment was used after close()."
);
create_exception!(
    deltaplan,
    StageError,
    PyRuntimeError,
    "A pipeline stage failed (the CLI's message: a missing input, another run's directory, a diverged refinement)."
);
create_exception!(
    deltaplan,
    CheckpointError,
    PyValueError,
    "A checkpoint that cannot be read or does not fit the simulator."
);

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<batch::Batch>()?;
    m.add_class::<pyplanner::RefinedPythonPlanner>()?;
    m.add_class::<distributed::RolloutWorker>()?;
    m.add_function(wrap_pyfunction!(distributed::refine_distributed, m)?)?;
    m.add_function(wrap_pyfunction!(pyplanner::refine_python, m)?)?;
    m.add_function(wrap_pyfunction!(stages::record_and_train_sft, m)?)?;
    m.add_function(wrap_pyfunction!(stages::run, m)?)?;
    m.add_function(wrap_pyfunction!(stages::record, m)?)?;
    m.add_function(wrap_pyfunction!(stages::train_sft, m)?)?;
    m.add_function(wrap_pyfunction!(stages::refine, m)?)?;
    m.add_function(wrap_pyfunction!(stages::evaluate_policy, m)?)?;
    m.add_function(wrap_pyfunction!(stages::report, m)?)?;
    m.add_function(wrap_pyfunction!(settings::default_settings_json, m)?)?;
    m.add("ConfigError", py.get_type::<ConfigError>())?;
    m.add("ActionError", py.get_type::<ActionError>())?;
    m.add("ClosedError", py.get_type::<ClosedError>())?;
    m.add("CheckpointError", py.get_type::<CheckpointError>())?;
    m.add("StageError", py.get_type::<StageError>())?;
    m.add("OBS_DIM", deltaplan_sim::OBS_DIM)?;
    Ok(())
}
