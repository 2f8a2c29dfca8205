//! `deltaplan._native.Batch`: N Rust driving worlds behind one Python object.
//!
//! - Action modes: `"plan"` (the action is the plan, `[N, 2H]` ego-frame waypoints) or
//!   `"residual"` (the action `a` in `[-1, 1]^{2H}` corrects the frozen SFT planner loaded from
//!   a checkpoint: `plan = sft(obs) + max_delta * clip(a, -1, 1)`, what deltaplan's PPO learns).
//! - Autoreset modes: `"next_step"` (gymnasium's default: the step that ends an episode returns
//!   its last observation, the next step ignores that world's action and returns the new
//!   episode's first observation with reward 0) or `"same_step"` (Stable-Baselines3: the world
//!   is reset in the ending step; the last observation comes back in `final_obs`).
//! - Every array handed to Python is freshly allocated (never written again by Rust): the
//!   simulator writes into its own buffers and each step copies them out. Aliasing corrupts
//!   SB3's rollouts silently; the copy costs well under the 10% budget (see the benchmark).
//! - The GIL is released during the batched step (planner inference included).

use deltaplan_eval::Metric;
use deltaplan_learn::{FrozenPlanner, SftPlanner, SftWorkspace};
use deltaplan_sim::render::{render_svg, Crop, Trail};
use deltaplan_sim::{BatchEnv, EnvSnapshot, Family, ScenarioSpec, StepBuffers, OBS_DIM};
use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use std::path::Path;

use crate::settings::config_from_json;
use crate::{ActionError, CheckpointError, ClosedError, ConfigError};
use deltaplan::config::Config;

/// How an action becomes the executed plan.
enum ActionMode {
    Plan,
    Residual(Box<Residual>),
}

/// The frozen planner under a residual action and its scratch memory.
struct Residual {
    planner: SftPlanner,
    workspace: SftWorkspace,
    embedding: Vec<f32>,
    plans: Vec<f32>,
    max_delta: [f32; 2],
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Autoreset {
    NextStep,
    SameStep,
}

/// Where the worlds' scenarios come from.
#[derive(Clone)]
enum Source {
    /// Training scenarios (`train_scenarios`), episodes without end.
    Train,
    /// An evaluation suite: one episode per world, then idle.
    Suite(Vec<ScenarioSpec>),
}

struct Inner {
    settings: Config,
    source: Source,
    env: BatchEnv,
    bufs: StepBuffers,
    n: usize,
    action_dim: usize,
    autoreset: Autoreset,
    mode: ActionMode,
    plans: Vec<f32>,
    /// Next-step autoreset: worlds whose episode ended in the previous step.
    pending: Vec<bool>,
    /// Steps taken in each world's current episode.
    episode_steps: Vec<u32>,
    /// The driven path of world 0 (for rendering).
    trail: Trail,
    pool: Option<rayon::ThreadPool>,
}

/// N driving worlds (see the module docs for the modes).
#[pyclass(module = "deltaplan._native")]
pub struct Batch {
    inner: Option<Inner>,
}

/// Arrays of one step, owned by nobody but Python once handed over.
struct StepOut {
    obs: Vec<f32>,
    reward: Vec<f32>,
    terminated: Vec<bool>,
    truncated: Vec<bool>,
    /// Same-step autoreset, when an episode ended: `[N, OBS_DIM]`, rows valid where it ended.
    final_obs: Option<Vec<f32>>,
    ended: Vec<usize>,
}

impl Inner {
    fn build(settings: &Config, source: &Source, n: usize, seed: u64) -> BatchEnv {
        match source {
            Source::Train => settings.train_scenarios.batch_env(settings.sim, n, seed),
            Source::Suite(specs) => BatchEnv::fixed(settings.sim, specs.clone()),
        }
    }

    fn clear_episodes(&mut self) {
        self.pending.iter_mut().for_each(|p| *p = false);
        self.episode_steps.iter_mut().for_each(|s| *s = 0);
        self.trail.points.clear();
        self.trail.record(self.env.world(0));
    }

    fn reset(&mut self, seed: u64) {
        let (settings, source, n) = (&self.settings, &self.source, self.n);
        let env = in_pool(&self.pool, || Self::build(settings, source, n, seed));
        self.env = env;
        self.env.observe(&mut self.bufs.obs);
        self.clear_episodes();
    }

    /// Every world starts its next episode (a reset without a seed).
    fn next_episode(&mut self) -> Result<(), String> {
        if let Source::Suite(_) = self.source {
            return Err(
                "an evaluation suite runs one episode per world: reset(seed) restarts it".into(),
            );
        }
        let snap = self.env.snapshot();
        let next = EnvSnapshot {
            seed: snap.seed,
            episodes: snap.episodes.iter().map(|e| e + 1).collect(),
            histories: vec![Vec::new(); self.n],
        };
        let (env, obs) = (&mut self.env, &mut self.bufs.obs);
        in_pool(&self.pool, || {
            env.restore(&next).map_err(|e| e.to_string())?;
            env.observe(obs);
            Ok::<(), String>(())
        })?;
        self.clear_episodes();
        Ok(())
    }

    /// Plans from actions, checked: shape by the caller, finiteness here.
    fn plans_from(&mut self, actions: &[f32]) -> Result<(), String> {
        if let Some(k) = actions.iter().position(|a| !a.is_finite()) {
            return Err(format!(
                "action of world {} has a non-finite value ({}) at index {}",
                k / self.action_dim,
                actions[k],
                k % self.action_dim
            ));
        }
        match &mut self.mode {
            ActionMode::Plan => self.plans.copy_from_slice(actions),
            ActionMode::Residual(r) => {
                r.planner
                    .plan_batch(
                        &self.bufs.obs,
                        &mut r.workspace,
                        &mut r.plans,
                        &mut r.embedding,
                    )
                    .map_err(|e| e.to_string())?;
                for (k, ((p, &sft), &a)) in
                    self.plans.iter_mut().zip(&r.plans).zip(actions).enumerate()
                {
                    *p = sft + r.max_delta[k % 2] * a.clamp(-1.0, 1.0);
                }
            }
        }
        Ok(())
    }

    fn step(&mut self, actions: &[f32]) -> Result<StepOut, String> {
        self.plans_from(actions)?;
        let held = match self.autoreset {
            Autoreset::NextStep => std::mem::replace(&mut self.pending, vec![false; self.n]),
            Autoreset::SameStep => Vec::new(),
        };
        let (env, plans, bufs, pool) = (&mut self.env, &self.plans, &mut self.bufs, &self.pool);
        in_pool(pool, || env.step_holding(plans, &held, bufs));
        let mut obs = self.bufs.obs.clone();
        let mut ended = Vec::new();
        for i in 0..self.n {
            if held.get(i).copied().unwrap_or(false) {
                self.episode_steps[i] = 0;
                continue;
            }
            self.episode_steps[i] += 1;
            if self.bufs.terminated[i] || self.bufs.truncated[i] {
                ended.push(i);
                self.episode_steps[i] = 0;
                if self.autoreset == Autoreset::NextStep {
                    let row = i * OBS_DIM..(i + 1) * OBS_DIM;
                    obs[row.clone()].copy_from_slice(&self.bufs.final_obs[row]);
                    self.pending[i] = true;
                }
            }
        }
        if self.n > 0 {
            if ended.first() == Some(&0) {
                self.trail.points.clear();
            }
            self.trail.record(self.env.world(0));
        }
        let final_obs = (self.autoreset == Autoreset::SameStep && !ended.is_empty())
            .then(|| self.bufs.final_obs.clone());
        Ok(StepOut {
            obs,
            reward: self.bufs.reward.clone(),
            terminated: self.bufs.terminated.clone(),
            truncated: self.bufs.truncated.clone(),
            final_obs,
            ended,
        })
    }
}

/// Runs `f` in the batch's own thread pool if it has one, else in rayon's global pool.
fn in_pool<T: Send>(pool: &Option<rayon::ThreadPool>, f: impl FnOnce() -> T + Send) -> T {
    match pool {
        Some(p) => p.install(f),
        None => f(),
    }
}

fn closed() -> PyErr {
    ClosedError::new_err("the environment is closed: make a new one")
}

fn matrix<'py>(py: Python<'py>, rows: usize, data: Vec<f32>) -> PyResult<Bound<'py, PyAny>> {
    let cols = data.len().checked_div(rows).unwrap_or(0);
    let a = Array2::from_shape_vec((rows, cols), data)
        .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(e.to_string()))?;
    Ok(a.into_pyarray(py).into_any())
}

/// Episode records of the worlds that ended, as gymnasium's vector infos: for each key an
/// array over all N worlds and a boolean mask `_key` (true where an episode ended).
fn episode_infos<'py>(
    py: Python<'py>,
    env: &BatchEnv,
    ended: &[usize],
) -> PyResult<Bound<'py, PyDict>> {
    let n = env.len();
    let infos = PyDict::new(py);
    let mut mask = vec![false; n];
    ended.iter().for_each(|&i| mask[i] = true);
    let mask = mask.into_pyarray(py);
    let put = |key: &str, values: Bound<'py, PyAny>| -> PyResult<()> {
        infos.set_item(key, values)?;
        infos.set_item(format!("_{key}"), mask.clone())
    };
    for metric in Metric::ALL {
        let mut v = vec![0.0f64; n];
        ended
            .iter()
            .for_each(|&i| v[i] = metric.value(env.finished(i)));
        put(metric.name(), v.into_pyarray(py).into_any())?;
    }
    let mut steps = vec![0i64; n];
    let mut seeds = vec![0u64; n];
    let mut reasons = vec![String::new(); n];
    let mut families = vec![String::new(); n];
    for &i in ended {
        let e = env.finished(i);
        steps[i] = i64::from(e.steps);
        seeds[i] = e.seed;
        reasons[i] = format!("{:?}", e.end);
        families[i] = e.family.name().to_string();
    }
    put("episode_steps", steps.into_pyarray(py).into_any())?;
    put("scenario_seed", seeds.into_pyarray(py).into_any())?;
    put("end_reason", PyList::new(py, reasons)?.into_any())?;
    put("family", PyList::new(py, families)?.into_any())?;
    Ok(infos)
}

/// How a batch acts and resets (the constructor's string arguments).
struct Modes<'a> {
    action: &'a str,
    autoreset: &'a str,
    sft_path: Option<&'a str>,
    num_threads: usize,
}

impl Batch {
    fn make(
        settings: Config,
        source: Source,
        num_envs: usize,
        seed: u64,
        modes: &Modes,
    ) -> PyResult<Self> {
        if num_envs == 0 {
            return Err(ConfigError::new_err("num_envs must be at least 1"));
        }
        let autoreset = match modes.autoreset {
            "next_step" => Autoreset::NextStep,
            "same_step" => Autoreset::SameStep,
            other => {
                return Err(ConfigError::new_err(format!(
                    "autoreset must be \"next_step\" or \"same_step\", got {other:?}"
                )))
            }
        };
        let action_dim = settings.sim.action_dim();
        let mode =
            match (modes.action, modes.sft_path) {
                ("plan", _) => ActionMode::Plan,
                ("residual", Some(path)) => {
                    let planner = SftPlanner::load_expecting(Path::new(path), OBS_DIM)
                        .map_err(|e| CheckpointError::new_err(format!("{path}: {e}")))?;
                    planner
                        .check_compatible(&settings.sim)
                        .map_err(|e| CheckpointError::new_err(format!("{path}: {e}")))?;
                    ActionMode::Residual(Box::new(Residual {
                        embedding: vec![0.0; num_envs * planner.embedding_dim()],
                        plans: vec![0.0; num_envs * action_dim],
                        planner,
                        workspace: SftWorkspace::default(),
                        max_delta: settings.refine.max_delta,
                    }))
                }
                ("residual", None) => return Err(ConfigError::new_err(
                    "action_mode \"residual\" needs sft_path, an SFT checkpoint (sft.safetensors)",
                )),
                (other, _) => {
                    return Err(ConfigError::new_err(format!(
                        "action_mode must be \"plan\" or \"residual\", got {other:?}"
                    )))
                }
            };
        let pool = crate::settings::thread_pool(modes.num_threads)?;
        let env = match &pool {
            Some(p) => p.install(|| Inner::build(&settings, &source, num_envs, seed)),
            None => Inner::build(&settings, &source, num_envs, seed),
        };
        let mut inner = Inner {
            env,
            settings,
            source,
            bufs: StepBuffers::new(num_envs),
            n: num_envs,
            action_dim,
            autoreset,
            mode,
            plans: vec![0.0; num_envs * action_dim],
            pending: vec![false; num_envs],
            episode_steps: vec![0; num_envs],
            trail: Trail::default(),
            pool,
        };
        inner.env.observe(&mut inner.bufs.obs);
        inner.clear_episodes();
        Ok(Batch { inner: Some(inner) })
    }
}

#[pymethods]
impl Batch {
    /// `settings_json`: the CLI's configuration (`settings::config_from_json`); `action_mode`: "plan" or "residual" (needs
    /// `sft_path`); `autoreset`: "next_step" or "same_step"; `num_threads`: 0 = rayon's global
    /// pool (all cores), else a pool of its own.
    #[new]
    #[pyo3(signature = (num_envs, seed, settings_json, action_mode="plan", autoreset="next_step", sft_path=None, num_threads=0))]
    fn new(
        num_envs: usize,
        seed: u64,
        settings_json: &str,
        action_mode: &str,
        autoreset: &str,
        sft_path: Option<&str>,
        num_threads: usize,
    ) -> PyResult<Self> {
        let settings = config_from_json(settings_json)?;
        let modes = Modes {
            action: action_mode,
            autoreset,
            sft_path,
            num_threads,
        };
        Batch::make(settings, Source::Train, num_envs, seed, &modes)
    }

    /// The CLI's evaluation suite of `split` ("eval" or "hard"): `eval.per_family` scenarios of
    /// every family, one episode per world (worlds go idle when done; `all_idle` says when all
    /// are), the same scenarios `deltaplan evaluate` drives.
    #[staticmethod]
    #[pyo3(signature = (split, settings_json, action_mode="plan", sft_path=None, num_threads=0, families=None))]
    fn suite(
        split: &str,
        settings_json: &str,
        action_mode: &str,
        sft_path: Option<&str>,
        num_threads: usize,
        families: Option<Vec<String>>,
    ) -> PyResult<Self> {
        let settings = config_from_json(settings_json)?;
        let split = crate::stages::parse_split(split)?;
        let families = match families {
            None => Family::ALL.to_vec(),
            Some(names) => names
                .iter()
                .map(|name| {
                    Family::ALL
                        .into_iter()
                        .find(|f| f.name() == name)
                        .ok_or_else(|| {
                            let known: Vec<_> = Family::ALL.iter().map(|f| f.name()).collect();
                            ConfigError::new_err(format!(
                                "unknown family {name:?}: known are {known:?}"
                            ))
                        })
                })
                .collect::<PyResult<Vec<_>>>()?,
        };
        let specs = split.suite(
            &families,
            settings.eval.per_family,
            settings.eval.difficulty,
        );
        let modes = Modes {
            action: action_mode,
            autoreset: "same_step",
            sft_path,
            num_threads,
        };
        Batch::make(
            settings,
            Source::Suite(specs.clone()),
            specs.len(),
            0,
            &modes,
        )
    }

    /// Whether every world of an evaluation suite has finished its episode.
    fn all_idle(&self) -> PyResult<bool> {
        Ok(self.inner.as_ref().ok_or_else(closed)?.env.all_idle())
    }

    #[getter]
    fn num_envs(&self) -> PyResult<usize> {
        Ok(self.inner.as_ref().ok_or_else(closed)?.n)
    }

    #[getter]
    fn obs_dim(&self) -> usize {
        OBS_DIM
    }

    #[getter]
    fn action_dim(&self) -> PyResult<usize> {
        Ok(self.inner.as_ref().ok_or_else(closed)?.action_dim)
    }

    /// Bound on the residual correction per coordinate (x, y), metres.
    #[getter]
    fn max_delta(&self) -> PyResult<(f32, f32)> {
        let d = self
            .inner
            .as_ref()
            .ok_or_else(closed)?
            .settings
            .refine
            .max_delta;
        Ok((d[0], d[1]))
    }

    /// Rebuilds every world from `seed` (world i's episodes are a pure function of the seed,
    /// i and the episode number) and returns the first observations `[N, OBS_DIM]`.
    fn reset<'py>(&mut self, py: Python<'py>, seed: u64) -> PyResult<Bound<'py, PyAny>> {
        let inner = self.inner.as_mut().ok_or_else(closed)?;
        py.detach(|| inner.reset(seed));
        matrix(py, inner.n, inner.bufs.obs.clone())
    }

    /// Every world starts its next episode; returns the first observations.
    fn next_episode<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let inner = self.inner.as_mut().ok_or_else(closed)?;
        py.detach(|| inner.next_episode())
            .map_err(pyo3::exceptions::PyRuntimeError::new_err)?;
        matrix(py, inner.n, inner.bufs.obs.clone())
    }

    /// Steps of the current episode of each world so far.
    fn episode_steps(&self) -> PyResult<Vec<u32>> {
        Ok(self
            .inner
            .as_ref()
            .ok_or_else(closed)?
            .episode_steps
            .clone())
    }

    /// One step of every world. `actions`: float32 `[N, 2H]`, C-contiguous, finite. Returns
    /// `(obs, reward, terminated, truncated, final_obs or None, infos or None)`; `infos` holds
    /// the episode records of the worlds that ended (see the module docs).
    #[allow(clippy::type_complexity)]
    fn step<'py>(
        &mut self,
        py: Python<'py>,
        actions: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, pyo3::types::PyTuple>> {
        let inner = self.inner.as_mut().ok_or_else(closed)?;
        let actions: PyReadonlyArray2<f32> = actions.extract().map_err(|_| {
            ActionError::new_err("actions must be a 2-D float32 numpy array [num_envs, action_dim]")
        })?;
        let shape = actions.shape().to_vec();
        if shape != [inner.n, inner.action_dim] {
            return Err(ActionError::new_err(format!(
                "actions have shape {shape:?}, expected [{}, {}]",
                inner.n, inner.action_dim
            )));
        }
        let slice = actions
            .as_slice()
            .map_err(|_| ActionError::new_err("actions must be C-contiguous"))?;
        let out = py
            .detach(|| inner.step(slice))
            .map_err(ActionError::new_err)?;
        let n = inner.n;
        let infos = if out.ended.is_empty() {
            py.None().into_bound(py)
        } else {
            episode_infos(py, &inner.env, &out.ended)?.into_any()
        };
        let final_obs = match out.final_obs {
            Some(f) => matrix(py, n, f)?,
            None => py.None().into_bound(py),
        };
        pyo3::types::PyTuple::new(
            py,
            [
                matrix(py, n, out.obs)?,
                out.reward.into_pyarray(py).into_any(),
                out.terminated.into_pyarray(py).into_any(),
                out.truncated.into_pyarray(py).into_any(),
                final_obs,
                infos,
            ],
        )
    }

    /// The frozen planner's plans for the current observations `[N, 2H]` (residual mode).
    fn sft_plans<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let inner = self.inner.as_mut().ok_or_else(closed)?;
        let zeros = vec![0.0f32; inner.n * inner.action_dim];
        match inner.mode {
            ActionMode::Plan => Err(ConfigError::new_err(
                "sft_plans needs action_mode \"residual\"",
            )),
            ActionMode::Residual(_) => {
                inner.plans_from(&zeros).map_err(ActionError::new_err)?;
                matrix(py, inner.n, inner.plans.clone())
            }
        }
    }

    /// The privileged expert's plans for the current state `[N, 2H]` (a reference policy).
    fn expert_plans<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let inner = self.inner.as_ref().ok_or_else(closed)?;
        let mut plans = vec![0.0f32; inner.n * inner.action_dim];
        inner.env.expert_actions(&mut plans);
        matrix(py, inner.n, plans)
    }

    /// World `index` as an RGB image `[size, size, 3]` (uint8), top-down, north up, centred
    /// on the ego, `metres` across.
    #[pyo3(signature = (index=0, size=256, metres=80.0))]
    fn render_rgb<'py>(
        &self,
        py: Python<'py>,
        index: usize,
        size: usize,
        metres: f32,
    ) -> PyResult<Bound<'py, PyAny>> {
        let inner = self.inner.as_ref().ok_or_else(closed)?;
        if index >= inner.n || size == 0 || size > 4096 || metres.is_nan() || metres <= 0.0 {
            return Err(ConfigError::new_err(format!(
                "render_rgb needs index < {}, 0 < size <= 4096 and metres > 0",
                inner.n
            )));
        }
        let image = crate::raster::render_rgb(inner.env.world(index), size, metres);
        let a = numpy::ndarray::Array3::from_shape_vec((size, size, 3), image)
            .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(e.to_string()))?;
        Ok(a.into_pyarray(py).into_any())
    }

    /// World 0 as an SVG document (with the path driven this episode).
    fn render_svg(&self) -> PyResult<String> {
        let inner = self.inner.as_ref().ok_or_else(closed)?;
        let w = inner.env.world(0);
        let title = format!("{} seed {}", w.spec.family.name(), w.spec.seed);
        Ok(render_svg(w, &inner.trail, &title, Crop::Trail))
    }

    /// Seconds `steps` raw Rust steps of every world with `plans` take (same-step autoreset
    /// into the batch's own buffers, no copies, no Python): the benchmark's reference.
    fn time_raw_steps(
        &mut self,
        py: Python<'_>,
        plans: &Bound<'_, PyAny>,
        steps: usize,
    ) -> PyResult<f64> {
        let inner = self.inner.as_mut().ok_or_else(closed)?;
        let plans: PyReadonlyArray2<f32> = plans
            .extract()
            .map_err(|_| ActionError::new_err("plans must be a 2-D float32 array"))?;
        let plans = plans
            .as_slice()
            .map_err(|_| ActionError::new_err("plans must be C-contiguous"))?;
        if plans.len() != inner.n * inner.action_dim {
            return Err(ActionError::new_err("plans must be [num_envs, action_dim]"));
        }
        let (env, bufs, pool) = (&mut inner.env, &mut inner.bufs, &inner.pool);
        Ok(py.detach(|| {
            let t = std::time::Instant::now();
            for _ in 0..steps {
                in_pool(pool, || env.step(plans, bufs));
            }
            t.elapsed().as_secs_f64()
        }))
    }

    /// Frees the worlds; any later call raises `ClosedError`. Closing twice is allowed.
    fn close(&mut self) {
        self.inner = None;
    }

    #[getter]
    fn closed(&self) -> bool {
        self.inner.is_none()
    }
}
