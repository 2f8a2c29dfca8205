//! The SFT planner: `obs -> normalise -> encoder MLP -> tanh -> z -> head MLP -> denormalise ->
//! waypoints`. `z` (default 128-d, in (-1, 1)) is the embedding the residual policy consumes
//! once the planner is frozen; the tanh keeps it bounded whatever the encoder weights.
//!
//! Normalisation (both stored in the checkpoint, computed on the training split only):
//! - observations: per-feature mean and std, std floored at [`OBS_STD_FLOOR`], normalised values
//!   clipped to `+-OBS_CLIP` so a feature that was (nearly) constant in the demonstrations
//!   cannot blow up the encoder when closed-loop driving moves it;
//! - waypoints: per-coordinate mean, and one scale per axis (x and y each pooled over the
//!   horizon). A per-coordinate std would weight a 5 cm error of the first lateral waypoint like
//!   a 10 m error of the last longitudinal one; pooling per axis keeps errors along an axis in
//!   metres (so the loss tracks ADE) while still balancing x (tens of metres) against y (metres).

use std::path::Path;

use deltaplan_sim::{SimConfig, OBS_DIM};
use deltaplan_stdx::seed;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{fix_for_kind, load_tensors, save_tensors, sha256_of, take_tensor};
use crate::error::{check_len, rows_of, LearnError, Result};
use crate::nn::{fast_tanh, InferWorkspace, Mlp, MlpInit, MlpWorkspace};
use crate::planner::{FrozenPlanner, PlannerError};

/// File kind of an SFT planner checkpoint.
pub const SFT_KIND: &str = "sft_planner";
/// Schema version this build writes and reads.
pub const SFT_SCHEMA_VERSION: u32 = 1;
/// Floor on per-feature observation std.
pub const OBS_STD_FLOOR: f32 = 1e-3;
/// Normalised observations are clipped to `[-OBS_CLIP, OBS_CLIP]`.
pub const OBS_CLIP: f32 = 10.0;
/// Floor on the per-axis waypoint scale, metres.
pub const ACT_SCALE_FLOOR: f32 = 0.05;
/// Rows per chunk when the frozen planner's batch is split across threads. Fixed, so the
/// chunking never depends on the thread count; rows are independent of the batch they sit in,
/// so the plans are the same bits as one forward over the whole batch.
pub const PLAN_CHUNK_ROWS: usize = 64;

/// Shape of an [`SftPlanner`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SftArch {
    pub obs_dim: usize,
    /// Encoder hidden widths.
    pub hidden: Vec<usize>,
    pub z_dim: usize,
    /// Waypoint-head hidden widths.
    pub head_hidden: Vec<usize>,
    /// Waypoints H; the output is `2H` (x0, y0, x1, y1, ...).
    pub horizon: usize,
    /// Seconds between waypoints the planner was trained for (checked against the controller).
    pub waypoint_dt: f32,
}

impl SftArch {
    fn encoder_sizes(&self) -> Vec<usize> {
        let mut s = vec![self.obs_dim];
        s.extend(&self.hidden);
        s.push(self.z_dim);
        s
    }
    fn head_sizes(&self) -> Vec<usize> {
        let mut s = vec![self.z_dim];
        s.extend(&self.head_hidden);
        s.push(2 * self.horizon);
        s
    }
}

/// Caller-owned buffers for [`SftPlanner::forward`] and training; grows to the largest batch
/// seen, then allocates nothing.
#[derive(Clone, Debug, Default)]
pub struct SftWorkspace {
    pub(super) x: Vec<f32>,
    pub(super) z: Vec<f32>,
    pub(super) dz: Vec<f32>,
    pub(super) y: Vec<f32>,
    pub(super) pred: Vec<f32>,
    pub(super) dpred: Vec<f32>,
    pub(super) enc: MlpWorkspace,
    pub(super) head: MlpWorkspace,
    /// Inference ([`SftPlanner::forward`]) needs no activations for a backward pass.
    pub(super) encoder_infer: InferWorkspace,
    pub(super) head_infer: InferWorkspace,
    /// One workspace per chunk of [`PLAN_CHUNK_ROWS`] rows when a frozen-planner batch is
    /// split across threads ([`FrozenPlanner::plan_batch`]).
    pub(super) chunks: Vec<SftWorkspace>,
}

impl SftWorkspace {
    pub fn new() -> Self {
        Self::default()
    }
}

pub(super) fn grow(v: &mut Vec<f32>, n: usize) {
    if v.len() < n {
        v.resize(n, 0.0);
    }
}

/// The behaviour-cloned planner.
#[derive(Clone, Debug, PartialEq)]
pub struct SftPlanner {
    pub(super) arch: SftArch,
    pub(super) encoder: Mlp,
    pub(super) head: Mlp,
    pub(super) obs_mean: Vec<f32>,
    pub(super) obs_std: Vec<f32>,
    pub(super) obs_inv_std: Vec<f32>,
    pub(super) act_mean: Vec<f32>,
    pub(super) act_scale: Vec<f32>,
    /// Free-form provenance saved with the checkpoint (training config, dataset, best epoch).
    pub info: serde_json::Value,
}

impl SftPlanner {
    /// A freshly initialised planner (orthogonal init, identity normalisation).
    pub fn new(arch: SftArch, seed: u64) -> Result<Self> {
        if arch.obs_dim == 0 || arch.z_dim == 0 || arch.horizon == 0 {
            return Err(LearnError::Config(format!(
                "SFT planner needs positive obs_dim, z_dim and horizon, got {arch:?}"
            )));
        }
        let mut rng = seed::rng(seed, 0);
        let encoder = Mlp::new(&arch.encoder_sizes(), MlpInit::orthogonal(1.0), &mut rng)?;
        let head = Mlp::new(&arch.head_sizes(), MlpInit::orthogonal(1.0), &mut rng)?;
        let (d, a) = (arch.obs_dim, 2 * arch.horizon);
        Ok(SftPlanner {
            encoder,
            head,
            obs_mean: vec![0.0; d],
            obs_std: vec![1.0; d],
            obs_inv_std: vec![1.0; d],
            act_mean: vec![0.0; a],
            act_scale: vec![1.0; a],
            arch,
            info: serde_json::Value::Null,
        })
    }

    pub fn arch(&self) -> &SftArch {
        &self.arch
    }
    pub fn obs_dim(&self) -> usize {
        self.arch.obs_dim
    }
    pub fn z_dim(&self) -> usize {
        self.arch.z_dim
    }
    pub fn action_dim(&self) -> usize {
        2 * self.arch.horizon
    }
    pub fn horizon(&self) -> usize {
        self.arch.horizon
    }
    pub fn encoder(&self) -> &Mlp {
        &self.encoder
    }
    pub fn encoder_mut(&mut self) -> &mut Mlp {
        &mut self.encoder
    }
    pub fn head(&self) -> &Mlp {
        &self.head
    }
    pub fn head_mut(&mut self) -> &mut Mlp {
        &mut self.head
    }
    pub fn obs_mean(&self) -> &[f32] {
        &self.obs_mean
    }
    pub fn obs_std(&self) -> &[f32] {
        &self.obs_std
    }
    pub fn act_mean(&self) -> &[f32] {
        &self.act_mean
    }
    pub fn act_scale(&self) -> &[f32] {
        &self.act_scale
    }
    /// Total trainable parameters.
    pub fn num_params(&self) -> usize {
        self.encoder.num_params() + self.head.num_params()
    }

    /// Sets the normalisation statistics (std floored at [`OBS_STD_FLOOR`], scale at
    /// [`ACT_SCALE_FLOOR`]).
    pub fn set_normalisation(
        &mut self,
        obs_mean: &[f32],
        obs_std: &[f32],
        act_mean: &[f32],
        act_scale: &[f32],
    ) -> Result<()> {
        let (d, a) = (self.obs_dim(), self.action_dim());
        check_len("obs_mean", obs_mean.len(), d)?;
        check_len("obs_std", obs_std.len(), d)?;
        check_len("act_mean", act_mean.len(), a)?;
        check_len("act_scale", act_scale.len(), a)?;
        if obs_mean
            .iter()
            .chain(obs_std)
            .chain(act_mean)
            .chain(act_scale)
            .any(|x| !x.is_finite())
        {
            return Err(LearnError::Config(
                "normalisation statistics must be finite".into(),
            ));
        }
        self.obs_mean.copy_from_slice(obs_mean);
        for (s, &x) in self.obs_std.iter_mut().zip(obs_std) {
            *s = x.max(OBS_STD_FLOOR);
        }
        for (i, &s) in self.obs_inv_std.iter_mut().zip(&self.obs_std) {
            *i = 1.0 / s;
        }
        self.act_mean.copy_from_slice(act_mean);
        for (s, &x) in self.act_scale.iter_mut().zip(act_scale) {
            *s = x.max(ACT_SCALE_FLOOR);
        }
        Ok(())
    }

    /// Normalises `obs` rows into `x` (same length).
    pub(super) fn normalise_obs(&self, obs: &[f32], x: &mut [f32]) {
        for (xr, or) in x
            .chunks_exact_mut(self.obs_dim())
            .zip(obs.chunks_exact(self.obs_dim()))
        {
            for (((xv, &o), &m), &is) in xr
                .iter_mut()
                .zip(or)
                .zip(&self.obs_mean)
                .zip(&self.obs_inv_std)
            {
                *xv = ((o - m) * is).clamp(-OBS_CLIP, OBS_CLIP);
            }
        }
    }

    /// Network pass on normalised `ws.x[..batch*D]`: leaves `z` in `ws.z` and the normalised
    /// prediction in `ws.pred`.
    pub(super) fn forward_normalised(&self, ws: &mut SftWorkspace, batch: usize) -> Result<()> {
        let (d, zd, a) = (self.obs_dim(), self.z_dim(), self.action_dim());
        grow(&mut ws.z, batch * zd);
        grow(&mut ws.pred, batch * a);
        let pre = self.encoder.forward(&ws.x[..batch * d], &mut ws.enc)?;
        for (z, &p) in ws.z[..batch * zd].iter_mut().zip(pre) {
            *z = fast_tanh(p);
        }
        let out = self.head.forward(&ws.z[..batch * zd], &mut ws.head)?;
        ws.pred[..batch * a].copy_from_slice(out);
        Ok(())
    }

    /// Batched inference: `obs` `[B, obs_dim]` -> `z_out` `[B, z_dim]`, `waypoints_out`
    /// `[B, 2H]` (ego frame, metres). Deterministic; allocates nothing once `ws` has seen a
    /// batch this large.
    pub fn forward(
        &self,
        obs: &[f32],
        ws: &mut SftWorkspace,
        z_out: &mut [f32],
        waypoints_out: &mut [f32],
    ) -> Result<()> {
        let batch = rows_of("sft obs", obs.len(), self.obs_dim())?;
        check_len("sft z_out", z_out.len(), batch * self.z_dim())?;
        check_len(
            "sft waypoints_out",
            waypoints_out.len(),
            batch * self.action_dim(),
        )?;
        grow(&mut ws.x, batch * self.obs_dim());
        let x = &mut ws.x[..batch * self.obs_dim()];
        self.normalise_obs(obs, x);
        // `forward_normalised`'s operations through the inference path: the same bits.
        let pre = self.encoder.infer(x, &mut ws.encoder_infer)?;
        for (z, &p) in z_out.iter_mut().zip(pre) {
            *z = fast_tanh(p);
        }
        let pred = self.head.infer(z_out, &mut ws.head_infer)?;
        self.denormalise(pred, waypoints_out);
        Ok(())
    }

    fn denormalise(&self, pred: &[f32], out: &mut [f32]) {
        for (orow, prow) in out
            .chunks_exact_mut(self.action_dim())
            .zip(pred.chunks_exact(self.action_dim()))
        {
            for (((o, &p), &m), &s) in orow
                .iter_mut()
                .zip(prow)
                .zip(&self.act_mean)
                .zip(&self.act_scale)
            {
                *o = m + s * p;
            }
        }
    }

    /// Named tensors in checkpoint order: encoder, head, normalisation.
    pub fn named_tensors(&self) -> Vec<(String, Vec<usize>, &[f32])> {
        let mut out: Vec<(String, Vec<usize>, &[f32])> = Vec::new();
        for (prefix, m) in [("encoder", &self.encoder), ("head", &self.head)] {
            for t in m.named_tensors() {
                out.push((format!("{prefix}.{}", t.name), t.shape, t.data));
            }
        }
        let (d, a) = (self.obs_dim(), self.action_dim());
        out.push(("obs_mean".into(), vec![d], &self.obs_mean));
        out.push(("obs_std".into(), vec![d], &self.obs_std));
        out.push(("act_mean".into(), vec![a], &self.act_mean));
        out.push(("act_scale".into(), vec![a], &self.act_scale));
        out
    }

    /// SHA-256 of weights and normalisation: identifies the frozen planner a residual policy
    /// was trained on.
    pub fn weights_hash(&self) -> String {
        sha256_of(&self.named_tensors())
    }

    /// Fails unless the planner plans for this simulator configuration (horizon and
    /// waypoint spacing).
    pub fn check_compatible(&self, sim: &SimConfig) -> Result<()> {
        if self.arch.horizon != sim.horizon
            || (self.arch.waypoint_dt - sim.controller.waypoint_dt).abs() > 1e-6
        {
            return Err(LearnError::Config(format!(
                "the SFT planner plans {} waypoints {} s apart, the simulator expects {} waypoints \
                 {} s apart: retrain the planner on demonstrations recorded with this sim config",
                self.arch.horizon,
                self.arch.waypoint_dt,
                sim.horizon,
                sim.controller.waypoint_dt
            )));
        }
        Ok(())
    }

    /// Writes the checkpoint atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let tensors = self.named_tensors();
        let meta = serde_json::json!({
            "kind": SFT_KIND,
            "schema_version": SFT_SCHEMA_VERSION,
            "arch": self.arch,
            "weights_sha256": sha256_of(&tensors),
            "obs_layout": deltaplan_sim::obs::LAYOUT
                .iter()
                .map(|&(n, s, l)| serde_json::json!({"name": n, "start": s, "len": l}))
                .collect::<Vec<_>>(),
            "info": self.info,
        });
        save_tensors(path, &tensors, &meta)
    }

    /// Loads a checkpoint, checking kind, version, that its observation width matches this
    /// build's simulator ([`OBS_DIM`]), every tensor's shape, and the stored weights hash.
    pub fn load(path: &Path) -> Result<Self> {
        Self::load_expecting(path, OBS_DIM)
    }

    /// [`SftPlanner::load`] for planners of another observation width (tests, toy envs).
    pub fn load_expecting(path: &Path, obs_dim: usize) -> Result<Self> {
        let (meta, mut tensors) = load_tensors(path, SFT_KIND, SFT_SCHEMA_VERSION)?;
        let incompatible = |reason: String| meta.incompatible(reason);
        let arch: SftArch = meta.field("arch")?;
        if arch.obs_dim != obs_dim {
            return Err(incompatible(format!(
                "the planner takes observations of {} features (obs_dim), but this build's \
                 simulator produces {obs_dim}",
                arch.obs_dim
            )));
        }
        let mut p = SftPlanner::new(arch, 0)?;
        for (prefix, which) in [("encoder", 0), ("head", 1)] {
            let m = if which == 0 {
                &mut p.encoder
            } else {
                &mut p.head
            };
            let names: Vec<(String, Vec<usize>)> = m
                .named_tensors()
                .into_iter()
                .map(|t| (t.name, t.shape))
                .collect();
            for (name, shape) in names {
                let full = format!("{prefix}.{name}");
                let data = take_tensor(&mut tensors, path, SFT_KIND, &full, &shape)?;
                m.set_tensor(&name, &shape, &data)?;
            }
        }
        let (d, a) = (p.obs_dim(), p.action_dim());
        let om = take_tensor(&mut tensors, path, SFT_KIND, "obs_mean", &[d])?;
        let os = take_tensor(&mut tensors, path, SFT_KIND, "obs_std", &[d])?;
        let am = take_tensor(&mut tensors, path, SFT_KIND, "act_mean", &[a])?;
        let asc = take_tensor(&mut tensors, path, SFT_KIND, "act_scale", &[a])?;
        p.set_normalisation(&om, &os, &am, &asc)
            .map_err(|e| incompatible(e.to_string()))?;
        p.info = meta.optional("info")?.unwrap_or(serde_json::Value::Null);
        if let Some(stored) = meta.optional::<String>("weights_sha256")? {
            let got = p.weights_hash();
            if stored != got {
                return Err(LearnError::Corrupt {
                    path: path.display().to_string(),
                    reason: format!("weights hash {got} differs from the stored {stored}"),
                    fix: fix_for_kind(SFT_KIND),
                });
            }
        }
        Ok(p)
    }
}

/// The built-in planner as the refinement's frozen planner: its embedding is `z`, its
/// observation statistics those it was trained with.
impl FrozenPlanner for SftPlanner {
    type Workspace = SftWorkspace;

    fn obs_dim(&self) -> usize {
        self.arch.obs_dim
    }

    fn horizon(&self) -> usize {
        self.arch.horizon
    }

    fn embedding_dim(&self) -> usize {
        self.arch.z_dim
    }

    fn plan_batch(
        &self,
        obs: &[f32],
        ws: &mut SftWorkspace,
        plans_out: &mut [f32],
        embedding_out: &mut [f32],
    ) -> std::result::Result<(), PlannerError> {
        let as_planner_error = |e: LearnError| match e {
            LearnError::Shape { .. } | LearnError::NotMultiple { .. } => {
                PlannerError::Shape(e.to_string())
            }
            other => PlannerError::Failed(other.to_string()),
        };
        let (d, a, zd) = (self.obs_dim(), self.action_dim(), self.z_dim());
        let batch = rows_of("sft obs", obs.len(), d).map_err(as_planner_error)?;
        if batch <= PLAN_CHUNK_ROWS {
            return self
                .forward(obs, ws, embedding_out, plans_out)
                .map_err(as_planner_error);
        }
        // The refinement's per-step batch (one row per world) is the rollout's one serial
        // stretch of matmuls: chunks of rows run side by side.
        check_len("sft waypoints_out", plans_out.len(), batch * a).map_err(as_planner_error)?;
        check_len("sft z_out", embedding_out.len(), batch * zd).map_err(as_planner_error)?;
        let chunks = batch.div_ceil(PLAN_CHUNK_ROWS);
        if ws.chunks.len() < chunks {
            ws.chunks.resize_with(chunks, SftWorkspace::default);
        }
        obs.par_chunks(PLAN_CHUNK_ROWS * d)
            .zip(plans_out.par_chunks_mut(PLAN_CHUNK_ROWS * a))
            .zip(embedding_out.par_chunks_mut(PLAN_CHUNK_ROWS * zd))
            .zip(ws.chunks.par_iter_mut())
            .try_for_each(|(((o, p), z), w)| self.forward(o, w, z, p))
            .map_err(as_planner_error)
    }

    fn obs_normalisation(&self) -> (&[f32], &[f32]) {
        (&self.obs_mean, &self.obs_std)
    }

    fn weights_hash(&self) -> String {
        SftPlanner::weights_hash(self)
    }
}
