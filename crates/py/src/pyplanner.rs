//! A Python callable as the frozen planner of a refinement (`deltaplan.refine(...,
//! planner=...)`): a batch of observations `[B, 142]` in, plans `[B, 2H]` out, through the
//! same `FrozenPlanner` seam the built-in SFT and ONNX planners use. It exposes no embedding
//! and no observation statistics (the residual normalises nothing it cannot know), and is
//! identified by the id the caller gives (stored in checkpoints, checked on resume).
//!
//! The refinement runs without the GIL; each forward takes it for the call only.

use deltaplan_learn::refine::{load_policy, ResidualPlanner};
use deltaplan_learn::{FrozenPlanner, PlannerError};
use deltaplan_sim::OBS_DIM;
use numpy::{IntoPyArray, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::prelude::*;

use crate::settings::config_from_json;
use crate::stages::{stage_error, with_run, RunDir};
use crate::{ActionError, CheckpointError};

/// A Python planner behind [`FrozenPlanner`].
pub struct PythonPlanner {
    /// Returns a C-contiguous float32 `[B, 2H]` array (the Python side checks and converts).
    callable: Py<PyAny>,
    horizon: usize,
    id: String,
    zeros: Vec<f32>,
    ones: Vec<f32>,
}

impl PythonPlanner {
    pub fn new(callable: Py<PyAny>, horizon: usize, id: String) -> Self {
        PythonPlanner {
            callable,
            horizon,
            id,
            zeros: vec![0.0; OBS_DIM],
            ones: vec![1.0; OBS_DIM],
        }
    }

    fn call(&self, py: Python<'_>, obs: &[f32], plans_out: &mut [f32]) -> PyResult<()> {
        let rows = obs.len() / OBS_DIM;
        let input = numpy::ndarray::Array2::from_shape_vec((rows, OBS_DIM), obs.to_vec())
            .map_err(|e| ActionError::new_err(e.to_string()))?
            .into_pyarray(py);
        let result = self.callable.bind(py).call1((input,))?;
        let plans: PyReadonlyArray2<f32> = result.extract().map_err(|_| {
            ActionError::new_err("the planner must return a float32 array [batch, 2H]")
        })?;
        if plans.shape() != [rows, self.action_dim()] {
            return Err(ActionError::new_err(format!(
                "the planner returned shape {:?} for {rows} observations, expected [{rows}, {}]",
                plans.shape(),
                self.action_dim()
            )));
        }
        let slice = plans
            .as_slice()
            .map_err(|_| ActionError::new_err("the planner's plans must be C-contiguous"))?;
        plans_out.copy_from_slice(slice);
        Ok(())
    }
}

impl FrozenPlanner for PythonPlanner {
    type Workspace = ();

    fn obs_dim(&self) -> usize {
        OBS_DIM
    }

    fn horizon(&self) -> usize {
        self.horizon
    }

    fn embedding_dim(&self) -> usize {
        0
    }

    fn plan_batch(
        &self,
        obs: &[f32],
        _ws: &mut (),
        plans_out: &mut [f32],
        _embedding_out: &mut [f32],
    ) -> Result<(), PlannerError> {
        if !obs.len().is_multiple_of(OBS_DIM)
            || plans_out.len() != obs.len() / OBS_DIM * self.action_dim()
        {
            return Err(PlannerError::Shape(format!(
                "{} observation floats and {} plan floats",
                obs.len(),
                plans_out.len()
            )));
        }
        Python::attach(|py| self.call(py, obs, plans_out))
            .map_err(|e| PlannerError::Failed(format!("the Python planner raised {e}")))
    }

    fn obs_normalisation(&self) -> (&[f32], &[f32]) {
        (&self.zeros, &self.ones)
    }

    fn weights_hash(&self) -> String {
        self.id.clone()
    }
}

/// `deltaplan refine` with `planner` (a batch of observations in, plans out) in place of the
/// run's SFT checkpoint; `planner_id` identifies it in the checkpoint. Returns the path of
/// `rl.safetensors`.
#[pyfunction]
#[pyo3(signature = (out_dir, settings_json, planner, planner_id, num_threads=0))]
pub fn refine_python(
    py: Python<'_>,
    out_dir: &str,
    settings_json: &str,
    planner: Py<PyAny>,
    planner_id: String,
    num_threads: usize,
) -> PyResult<String> {
    let horizon = config_from_json(settings_json)?.sim.horizon;
    let frozen = PythonPlanner::new(planner, horizon, planner_id);
    let dir = RunDir {
        out_dir,
        settings_json,
        num_threads,
    };
    with_run(py, dir, |cfg, out| {
        let _lock = deltaplan::pipeline::guard(cfg, out)?;
        deltaplan::pipeline::refine_with(cfg, out, &frozen)?;
        Ok(out.join("rl.safetensors").display().to_string())
    })
}

/// The refined planner of a refinement of a Python planner: `planner(obs) + ramp * delta(obs)`
/// with the residual of `rl.safetensors` (its mean action), callable on a batch of
/// observations, e.g. by `deltaplan.evaluate`.
#[pyclass(module = "deltaplan._native")]
pub struct RefinedPythonPlanner {
    frozen: PythonPlanner,
    policy: deltaplan_learn::refine::LoadedPolicy,
}

#[pymethods]
impl RefinedPythonPlanner {
    #[new]
    fn new(
        checkpoint: &str,
        settings_json: &str,
        planner: Py<PyAny>,
        planner_id: String,
    ) -> PyResult<Self> {
        let horizon = config_from_json(settings_json)?.sim.horizon;
        let frozen = PythonPlanner::new(planner, horizon, planner_id);
        let policy = load_policy(std::path::Path::new(checkpoint), &frozen)
            .map_err(|e| CheckpointError::new_err(e.to_string()))?;
        Ok(RefinedPythonPlanner { frozen, policy })
    }

    /// The refinement iteration the checkpoint holds.
    #[getter]
    fn iteration(&self) -> usize {
        self.policy.iteration
    }

    /// Plans `[B, 2H]` (float32) for observations `[B, 142]` (float32, C-contiguous).
    fn __call__<'py>(
        &self,
        py: Python<'py>,
        obs: PyReadonlyArray2<'py, f32>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let rows = obs.shape()[0];
        if obs.shape()[1] != OBS_DIM {
            return Err(ActionError::new_err(format!(
                "observations have shape {:?}, expected [batch, {OBS_DIM}]",
                obs.shape()
            )));
        }
        let obs = obs
            .as_slice()
            .map_err(|_| ActionError::new_err("observations must be C-contiguous"))?;
        let mut plans = vec![0.0f32; rows * self.frozen.action_dim()];
        ResidualPlanner::new(&self.frozen, &self.policy.ac, self.policy.ramp)
            .plan(obs, &mut plans)
            .map_err(|e| stage_error(e.into()))?;
        let a = numpy::ndarray::Array2::from_shape_vec((rows, self.frozen.action_dim()), plans)
            .map_err(|e| ActionError::new_err(e.to_string()))?;
        Ok(a.into_pyarray(py).into_any())
    }
}
