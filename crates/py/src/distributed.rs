//! Refinement with rollouts collected elsewhere (`deltaplan.ray`): a [`RolloutWorker`] class a
//! Ray actor holds (its worlds, its own frozen planner, built inside the actor), and
//! [`refine_distributed`], the CLI's refine stage driven with three Python callables that carry
//! the learner's messages to the workers and back.
//!
//! The Rust work runs without the GIL; a callable takes it for the call only.

use std::path::Path;

use deltaplan::frozen::Frozen;
use deltaplan::pipeline;
use deltaplan_learn::distributed::{RolloutWorker as Worker, Workers};
use deltaplan_learn::LearnError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::settings::{config_from_json, thread_pool};
use crate::stages::{guarded, stage_error, RunDir};
use crate::StageError;

/// Worlds `first_world..first_world + worlds` of the refinement of the run in `out_dir` (its
/// frozen planner: `sft.safetensors` there, or the configured ONNX file), for a Ray actor.
#[pyclass(module = "deltaplan._native")]
pub struct RolloutWorker {
    worker: Worker<'static, Frozen>,
    pool: Option<rayon::ThreadPool>,
}

#[pymethods]
impl RolloutWorker {
    #[new]
    #[pyo3(signature = (out_dir, settings_json, first_world, worlds, num_threads=1))]
    fn new(
        out_dir: &str,
        settings_json: &str,
        first_world: usize,
        worlds: usize,
        num_threads: usize,
    ) -> PyResult<Self> {
        let cfg = config_from_json(settings_json)?;
        let planner = pipeline::load_frozen(&cfg, Path::new(out_dir)).map_err(stage_error)?;
        // One planner per worker for the worker's (the actor process's) whole life.
        let planner: &'static Frozen = Box::leak(Box::new(planner));
        let worker = Worker::new(
            cfg.refine.clone(),
            cfg.sim,
            &cfg.train_scenarios,
            planner,
            cfg.stage_seed(),
            first_world..first_world.saturating_add(worlds),
        )
        .map_err(learn_error)?;
        Ok(RolloutWorker {
            worker,
            pool: thread_pool(num_threads)?,
        })
    }

    /// Answers the learner's request (bytes) with this worker's rollout part (bytes).
    fn collect<'py>(&mut self, py: Python<'py>, request: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
        let (worker, pool) = (&mut self.worker, &self.pool);
        let part = py
            .detach(|| match pool {
                Some(p) => p.install(|| worker.collect(request)),
                None => worker.collect(request),
            })
            .map_err(learn_error)?;
        Ok(PyBytes::new(py, &part))
    }

    /// This worker's worlds' state, for the learner's checkpoint (bytes).
    fn snapshot<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let snap = self.worker.snapshot().map_err(learn_error)?;
        Ok(PyBytes::new(py, &snap))
    }

    /// Restores this worker's worlds from the learner's whole snapshot (bytes).
    fn restore(&mut self, py: Python<'_>, env: &[u8]) -> PyResult<()> {
        let (worker, pool) = (&mut self.worker, &self.pool);
        py.detach(|| match pool {
            Some(p) => p.install(|| worker.restore(env)),
            None => worker.restore(env),
        })
        .map_err(learn_error)
    }
}

/// The refine stage of the run in `out_dir`, learning here from what the workers collect:
/// `collect(request: bytes) -> list[bytes]`, `snapshots() -> list[bytes]`,
/// `restore(env: bytes) -> None` reach them. Returns the checkpoint's path.
#[pyfunction]
#[pyo3(signature = (out_dir, settings_json, collect, snapshots, restore, num_threads=0))]
pub fn refine_distributed(
    py: Python<'_>,
    out_dir: &str,
    settings_json: &str,
    collect: Py<PyAny>,
    snapshots: Py<PyAny>,
    restore: Py<PyAny>,
    num_threads: usize,
) -> PyResult<String> {
    let dir = RunDir {
        out_dir,
        settings_json,
        num_threads,
    };
    let workers = PyWorkers {
        collect,
        snapshots,
        restore,
    };
    guarded(py, dir, move |cfg, out| {
        pipeline::refine_distributed(cfg, out, workers)?;
        Ok(out.join("rl.safetensors").display().to_string())
    })
}

/// The workers behind Python callables.
struct PyWorkers {
    collect: Py<PyAny>,
    snapshots: Py<PyAny>,
    restore: Py<PyAny>,
}

impl PyWorkers {
    /// Calls `f` with the GIL, turning a Python exception into the workers' failure.
    fn call<T>(
        what: &str,
        f: impl for<'py> FnOnce(Python<'py>) -> PyResult<T>,
    ) -> deltaplan_learn::Result<T> {
        Python::attach(|py| f(py).map_err(|e| LearnError::Workers(format!("{what}: {e}"))))
    }

    fn byte_list(result: &Bound<'_, PyAny>) -> PyResult<Vec<Vec<u8>>> {
        result.extract::<Vec<Vec<u8>>>().map_err(|_| {
            StageError::new_err("the workers' callable must return a list of bytes, one per worker")
        })
    }
}

impl Workers for PyWorkers {
    fn collect(&mut self, request: &[u8]) -> deltaplan_learn::Result<Vec<Vec<u8>>> {
        Self::call("collecting the rollout", |py| {
            let r = self.collect.bind(py).call1((PyBytes::new(py, request),))?;
            Self::byte_list(&r)
        })
    }

    fn snapshots(&mut self) -> deltaplan_learn::Result<Vec<Vec<u8>>> {
        Self::call("taking the workers' snapshots", |py| {
            let r = self.snapshots.bind(py).call0()?;
            Self::byte_list(&r)
        })
    }

    fn restore(&mut self, env: &[u8]) -> deltaplan_learn::Result<()> {
        Self::call("restoring the workers", |py| {
            self.restore.bind(py).call1((PyBytes::new(py, env),))?;
            Ok(())
        })
    }
}

/// A library error as the Python exception of its kind.
fn learn_error(e: LearnError) -> PyErr {
    stage_error(e.into())
}
