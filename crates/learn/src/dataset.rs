//! Recorded expert demonstrations: (observation, expert waypoints) pairs from closed-loop
//! rollouts of the privileged expert, for behaviour cloning.
//!
//! This module records the built-in world ([`record_demonstrations`]). With
//! `train_scenarios.world = "sumo"` the demonstrator is SUMO's own driver model, recorded by
//! the CLI (`deltaplan::sumo_world`, over `deltaplan_sumo::demo`) into the same [`Dataset`]:
//! labels are the waypoints SUMO's driver then followed (in hindsight), no noise is injected
//! (SUMO keeps its vehicles on lane centrelines), and `executed` equals `actions`.
//!
//! Covariate shift (DART, Laskey et al. 2017): a planner trained only on states the expert
//! visits never sees how to recover from its own small errors, which compound in closed loop.
//! So in a configurable fraction of episodes the *executed* plan is the expert plan plus smooth
//! noise (a lateral offset ramped in over the horizon, and a speed scale), pushing the ego off
//! the expert's state distribution, while the *recorded* label is always the clean expert plan
//! computed at the state actually reached. The planner thus learns corrections back to the
//! expert's behaviour.
//!
//! Determinism: scenarios are a pure function of (seed, world, episode) in
//! [`deltaplan_sim::BatchEnv`], and the noise of world `i` comes from its own RNG seeded from
//! (seed, i) and advanced in a fixed order, so the same config gives the same tensors bit for
//! bit, for any rayon thread count.

use std::path::{Path, PathBuf};

use deltaplan_sim::bev::{self, BevSpec};
use deltaplan_sim::{Difficulty, Family, SimConfig, StepBuffers, OBS_DIM};
use deltaplan_stdx::seed::{self, splitmix64};
use rand::RngExt;
use rand_distr::{Distribution, StandardNormal};
use rand_pcg::Pcg64;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{load_tensors_with_bytes, save_tensors_with_bytes, take_tensor};
use crate::error::{LearnError, Result};
use crate::scenarios::{TrainScenarios, TrainWorld};

/// File kind in the checkpoint metadata.
pub const DATASET_KIND: &str = "demonstrations";
/// Schema version this build writes and reads.
/// Version 2: the metadata `config` is a [`Recording`] (simulator, seed, training scenarios and
/// the demonstration settings as separate parts). Version 3: optional BEV rasters, a U8 tensor
/// `bev` `[N, C, H, W]` with its spec and channel names in the metadata (`bev`).
pub const DATASET_SCHEMA_VERSION: u32 = 3;
/// Recorded rasters above this many bytes are refused (they are held in memory).
pub const MAX_BEV_BYTES: usize = 4 << 30;
/// File name inside a dataset directory.
pub const DATASET_FILE: &str = "demos.safetensors";

/// Smooth perturbation of the executed plan (DART-style noise injection).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DemoNoise {
    /// Probability that an episode is perturbed (drawn once per episode).
    pub prob: f32,
    /// Stationary standard deviation of the lateral offset, metres. The offset is added to
    /// waypoint j scaled by (j+1)/H (a ramp), so the first waypoints barely move and the
    /// controller steers smoothly towards the offset line.
    pub lateral_m: f32,
    /// Stationary standard deviation of the speed scale: executed waypoint x-coordinates are
    /// multiplied by `1 + s`, which the controller's fit turns into a speed change.
    pub speed_frac: f32,
    /// Correlation time of both Ornstein-Uhlenbeck processes, seconds (smoothness).
    pub tau_s: f32,
}

impl Default for DemoNoise {
    fn default() -> Self {
        DemoNoise {
            prob: 0.5,
            lateral_m: 0.5,
            speed_frac: 0.1,
            tau_s: 2.0,
        }
    }
}

/// What to record (the user's settings; see [`Recording`] for everything a recording uses).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DemoConfig {
    /// Worlds stepped together.
    pub n_envs: usize,
    /// Steps per world; samples = `n_envs * steps`.
    pub steps: usize,
    pub noise: DemoNoise,
    /// Also record the bird's-eye-view raster of every sample (unset: none; an empty
    /// `[demos.bev]` section records the default [`BevSpec`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bev: Option<BevSpec>,
}

impl Default for DemoConfig {
    fn default() -> Self {
        DemoConfig {
            n_envs: 64,
            steps: 1500,
            noise: DemoNoise::default(),
            bev: None,
        }
    }
}

impl DemoConfig {
    /// Checks ranges, naming the field at fault.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(LearnError::Config(format!("demos.{m}")));
        if self.n_envs == 0 || self.steps == 0 {
            return bad("n_envs and demos.steps must be at least 1");
        }
        // Episode ids and steps are stored as f32: keep them exactly representable.
        if self.n_envs.saturating_mul(self.steps) >= 1 << 24 {
            return bad("n_envs * demos.steps must stay below 16.7M samples (2^24)");
        }
        let n = &self.noise;
        if !(0.0..=1.0).contains(&n.prob) {
            return bad("noise.prob must be in [0, 1]");
        }
        if !(0.0..=5.0).contains(&n.lateral_m) {
            return bad("noise.lateral_m must be in [0, 5]");
        }
        if !(0.0..=0.5).contains(&n.speed_frac) {
            return bad("noise.speed_frac must be in [0, 0.5]");
        }
        if !(n.tau_s > 0.0 && n.tau_s <= 60.0) {
            return bad("noise.tau_s must be in (0, 60]");
        }
        if let Some(spec) = &self.bev {
            spec.validate()
                .map_err(|e| LearnError::Config(format!("demos.bev: {e}")))?;
            let bytes = (self.n_envs * self.steps).saturating_mul(spec.len());
            if bytes > MAX_BEV_BYTES {
                return Err(LearnError::Config(format!(
                    "demos.bev: {} samples x {} bytes per raster = {:.1} GiB, above the {} GiB the \
                     recording holds in memory: record fewer demos.steps or demos.n_envs, \
                     or a smaller raster",
                    self.n_envs * self.steps,
                    spec.len(),
                    bytes as f64 / f64::from(1u32 << 30),
                    MAX_BEV_BYTES >> 30
                )));
            }
        }
        Ok(())
    }
}

/// Everything a recording uses: the user's [`DemoConfig`] and the values the caller passes in
/// (the run's simulator, seed and training scenarios). Stored in the dataset file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recording {
    pub sim: SimConfig,
    /// Seeds the scenarios and the noise.
    pub seed: u64,
    pub scenarios: TrainScenarios,
    pub demos: DemoConfig,
}

impl Recording {
    /// Checks every part, naming the field at fault, and what a SUMO recording cannot do.
    pub fn validate(&self) -> Result<()> {
        self.sim
            .validate()
            .map_err(|e| LearnError::Config(e.to_string()))?;
        self.scenarios.validate()?;
        if self.scenarios.world == TrainWorld::Sumo {
            if self.demos.bev.is_some() {
                return Err(LearnError::Config(
                    "demos.bev: the SUMO world does not draw BEV rasters yet: record without \
                     demos.bev, or with train_scenarios.world = \"builtin\""
                        .into(),
                ));
            }
            if self.sim.steps_per_waypoint().is_none() {
                return Err(LearnError::Config(format!(
                    "SUMO's demonstrations are labelled with where the ego was every \
                     sim.controller.waypoint_dt, which must then be a multiple of sim.dt \
                     ({} s is not a multiple of {} s): change either, or record with \
                     train_scenarios.world = \"builtin\"",
                    self.sim.controller.waypoint_dt, self.sim.dt
                )));
            }
        }
        self.demos.validate()
    }
}

/// One recorded episode (possibly cut short by the end of recording).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpisodeInfo {
    pub family: Family,
    /// Scenario seed (train split).
    pub seed: u64,
    /// The episode's difficulty (drawn per episode from the configured range). Recordings made
    /// before difficulties were mixed lack it and read as the default.
    #[serde(default)]
    pub difficulty: Difficulty,
    /// World index in the batch that ran it.
    pub env: u32,
    /// Whether the executed plans were perturbed.
    pub noisy: bool,
}

/// Recorded demonstrations, in memory. Sample `k` is `obs[k*D..]`, `actions[k*2H..]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    pub config: Recording,
    /// `[N, OBS_DIM]`.
    pub obs: Vec<f32>,
    /// `[N, 2H]`: the clean expert plan at the recorded state (ego frame, metres): the label.
    pub actions: Vec<f32>,
    /// `[N, 2H]`: the plan actually executed from that state (`actions` plus noise in noisy
    /// episodes, identical otherwise). Replaying these from an episode's scenario spec
    /// reproduces the recorded states exactly, so every label can be audited. In a SUMO
    /// recording SUMO drove and the label is what it did: `executed` equals `actions` (a
    /// replay through deltaplan's controller would not reproduce SUMO's driving).
    pub executed: Vec<f32>,
    /// `[N]`: index into `Family::ALL`.
    pub family: Vec<u8>,
    /// `[N]`: episode id, an index into `episodes`.
    pub episode: Vec<u32>,
    /// `[N]`: step within the episode (0 = the reset state).
    pub step: Vec<u32>,
    /// `[N, C, H, W]` bytes when `config.demos.bev` is set: the BEV raster of each sample's
    /// state (see `deltaplan_sim::bev`).
    pub bev: Option<Vec<u8>>,
    /// Per episode id.
    pub episodes: Vec<EpisodeInfo>,
}

fn family_id(f: Family) -> u8 {
    Family::ALL.iter().position(|&g| g == f).unwrap_or(0) as u8
}

/// Per-world noise state (Ornstein-Uhlenbeck processes), advanced once per step.
struct NoiseState {
    rng: Pcg64,
    noisy: bool,
    lateral: f32,
    speed: f32,
}

impl NoiseState {
    fn new_episode(&mut self, n: &DemoNoise) {
        self.noisy = self.rng.random::<f32>() < n.prob;
        // Start from the stationary distribution, so noise is present from the first step.
        let g1: f32 = StandardNormal.sample(&mut self.rng);
        let g2: f32 = StandardNormal.sample(&mut self.rng);
        self.lateral = n.lateral_m * g1;
        self.speed = n.speed_frac * g2;
    }

    fn advance(&mut self, n: &DemoNoise, dt: f32) {
        // Exact OU discretisation: x' = a x + sigma sqrt(1 - a^2) g.
        let a = (-dt / n.tau_s).exp();
        let k = (1.0 - a * a).max(0.0).sqrt();
        let g1: f32 = StandardNormal.sample(&mut self.rng);
        let g2: f32 = StandardNormal.sample(&mut self.rng);
        self.lateral = a * self.lateral + n.lateral_m * k * g1;
        self.speed = a * self.speed + n.speed_frac * k * g2;
    }

    /// Writes the executed plan: `clean` perturbed when this episode is noisy.
    fn perturb(&self, clean: &[f32], out: &mut [f32]) {
        out.copy_from_slice(clean);
        if !self.noisy {
            return;
        }
        let h = out.len() / 2;
        let speed = (1.0 + self.speed).max(0.0);
        for (j, wp) in out.chunks_exact_mut(2).enumerate() {
            wp[0] *= speed;
            wp[1] += self.lateral * (j + 1) as f32 / h as f32;
        }
    }
}

/// Records expert demonstrations in the built-in world. `progress` is called after every step with the number of
/// samples recorded so far.
pub fn record_demonstrations(rec: &Recording, mut progress: impl FnMut(usize)) -> Result<Dataset> {
    rec.validate()?;
    if rec.scenarios.world != TrainWorld::Builtin {
        return Err(LearnError::Config(
            "this records the built-in world: SUMO's demonstrations are recorded by the CLI \
             (deltaplan record, or deltaplan::sumo_world::record_demonstrations)"
                .into(),
        ));
    }
    let cfg = &rec.demos;
    let n = cfg.n_envs;
    let d = OBS_DIM;
    let a = rec.sim.action_dim();
    let total = n * cfg.steps;
    let mut env = rec.scenarios.batch_env(rec.sim, n, rec.seed);
    let mut buf = StepBuffers::new(n);
    env.observe(&mut buf.obs);
    let mut clean = vec![0.0f32; n * a];
    let mut executed = vec![0.0f32; n * a];
    let mut ds = Dataset {
        config: rec.clone(),
        obs: Vec::with_capacity(total * d),
        actions: Vec::with_capacity(total * a),
        executed: Vec::with_capacity(total * a),
        family: Vec::with_capacity(total),
        episode: Vec::with_capacity(total),
        step: Vec::with_capacity(total),
        bev: cfg.bev.map(|spec| Vec::with_capacity(total * spec.len())),
        episodes: Vec::new(),
    };
    let mut rasters = cfg
        .bev
        .map_or_else(Vec::new, |spec| vec![0u8; n * spec.len()]);
    let mut noise: Vec<NoiseState> = (0..n)
        .map(|i| {
            // One generator per world, seeded through SplitMix64 so neighbouring worlds and
            // seeds are decorrelated (PCG streams differing only in increment are not, at
            // first).
            let mut s = NoiseState {
                rng: seed::rng(splitmix64(splitmix64(rec.seed ^ 0x0D5A_4E01) ^ i as u64), 0),
                noisy: false,
                lateral: 0.0,
                speed: 0.0,
            };
            s.new_episode(&cfg.noise);
            s
        })
        .collect();
    let mut current: Vec<u32> = Vec::with_capacity(n);
    let mut step_in_ep = vec![0u32; n];
    for (i, ns) in noise.iter().enumerate() {
        let spec = env.world(i).spec;
        current.push(ds.episodes.len() as u32);
        ds.episodes.push(EpisodeInfo {
            family: spec.family,
            seed: spec.seed,
            difficulty: spec.difficulty,
            env: i as u32,
            noisy: ns.noisy,
        });
    }
    for _ in 0..cfg.steps {
        env.expert_actions(&mut clean);
        ds.obs.extend_from_slice(&buf.obs);
        if let (Some(spec), Some(bev)) = (&cfg.bev, &mut ds.bev) {
            env.observe_bev(spec, &mut rasters);
            bev.extend_from_slice(&rasters);
        }
        ds.actions.extend_from_slice(&clean);
        for i in 0..n {
            let ep = current[i];
            ds.family.push(family_id(ds.episodes[ep as usize].family));
            ds.episode.push(ep);
            ds.step.push(step_in_ep[i]);
            noise[i].perturb(
                &clean[i * a..(i + 1) * a],
                &mut executed[i * a..(i + 1) * a],
            );
        }
        ds.executed.extend_from_slice(&executed);
        env.step(&executed, &mut buf);
        for i in 0..n {
            if buf.terminated[i] || buf.truncated[i] {
                noise[i].new_episode(&cfg.noise);
                let spec = env.world(i).spec;
                current[i] = ds.episodes.len() as u32;
                step_in_ep[i] = 0;
                ds.episodes.push(EpisodeInfo {
                    family: spec.family,
                    seed: spec.seed,
                    difficulty: spec.difficulty,
                    env: i as u32,
                    noisy: noise[i].noisy,
                });
            } else {
                step_in_ep[i] += 1;
                noise[i].advance(&cfg.noise, rec.sim.dt);
            }
        }
        progress(ds.family.len());
    }
    Ok(ds)
}

/// The recorded rasters of a dataset's file, checked against its spec and this build's
/// renderer: channel names, shape, and masks that are 0 or 255.
fn load_bev(
    meta: &crate::checkpoint::Metadata,
    byte_tensors: &mut crate::checkpoint::ByteTensorMap,
    path: &Path,
    spec: &BevSpec,
    n: usize,
) -> Result<Vec<u8>> {
    let incompatible = |reason: String| meta.incompatible(reason);
    spec.validate()
        .map_err(|e| incompatible(format!("its demos.bev spec is invalid: {e}")))?;
    #[derive(Deserialize)]
    struct BevMeta {
        channels: Vec<String>,
    }
    let recorded: BevMeta = meta.field("bev")?;
    if recorded.channels != bev::CHANNELS {
        return Err(incompatible(format!(
            "its rasters have channels {:?}, this build's renderer draws {:?}",
            recorded.channels,
            bev::CHANNELS
        )));
    }
    let [c, h, w] = spec.shape();
    let data = take_tensor(byte_tensors, path, DATASET_KIND, "bev", &[n, c, h, w])?;
    let planes = data.chunks_exact(spec.plane()).enumerate();
    for (i, plane) in planes.filter(|(i, _)| i % c != bev::channel::SPEED) {
        if let Some(&x) = plane.iter().find(|&&x| x != 0 && x != bev::ON) {
            return Err(incompatible(format!(
                "BEV sample {} channel `{}` holds {x}, but mask channels hold 0 or 255",
                i / c,
                bev::CHANNELS[i % c]
            )));
        }
    }
    Ok(data)
}

/// Path of the dataset file inside `dir`.
pub fn dataset_path(dir: &Path) -> PathBuf {
    dir.join(DATASET_FILE)
}

impl Dataset {
    pub fn n_samples(&self) -> usize {
        self.family.len()
    }
    pub fn obs_dim(&self) -> usize {
        OBS_DIM
    }
    pub fn action_dim(&self) -> usize {
        self.config.sim.action_dim()
    }
    pub fn horizon(&self) -> usize {
        self.config.sim.horizon
    }
    pub fn n_episodes(&self) -> usize {
        self.episodes.len()
    }

    /// Observation row `k`.
    pub fn obs_row(&self, k: usize) -> &[f32] {
        &self.obs[k * OBS_DIM..(k + 1) * OBS_DIM]
    }
    /// Expert plan of sample `k`.
    pub fn action_row(&self, k: usize) -> &[f32] {
        let a = self.action_dim();
        &self.actions[k * a..(k + 1) * a]
    }

    /// The BEV spec of the recorded rasters, if any.
    pub fn bev_spec(&self) -> Option<&BevSpec> {
        self.config.demos.bev.as_ref()
    }

    /// BEV raster of sample `k` (`[C, H, W]` bytes), when rasters were recorded.
    pub fn bev_row(&self, k: usize) -> Option<&[u8]> {
        let len = self.bev_spec()?.len();
        Some(&self.bev.as_ref()?[k * len..(k + 1) * len])
    }

    fn metadata(&self) -> serde_json::Value {
        let layout: Vec<serde_json::Value> = deltaplan_sim::obs::LAYOUT
            .iter()
            .map(
                |&(name, start, len)| serde_json::json!({"name": name, "start": start, "len": len}),
            )
            .collect();
        let bev = self.bev_spec().map(|spec| {
            serde_json::json!({
                "spec": spec,
                "shape": spec.shape(),
                "channels": bev::CHANNELS,
                "dtype": "uint8",
                "value": "byte / 255",
            })
        });
        serde_json::json!({
            "bev": bev,
            "kind": DATASET_KIND,
            "schema_version": DATASET_SCHEMA_VERSION,
            "obs_dim": OBS_DIM,
            "action_dim": self.action_dim(),
            "horizon": self.horizon(),
            "waypoint_dt": self.config.sim.controller.waypoint_dt,
            "n_samples": self.n_samples(),
            "seed": self.config.seed,
            "config": self.config,
            "obs_layout": layout,
            "families": Family::ALL.iter().map(|f| f.name()).collect::<Vec<_>>(),
            "episodes": self.episodes,
        })
    }

    /// Writes `dir/demos.safetensors` atomically (creating `dir`).
    pub fn save(&self, dir: &Path) -> Result<PathBuf> {
        let n = self.n_samples();
        let as_f32 = |v: &[u32]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
        let family: Vec<f32> = self.family.iter().map(|&x| f32::from(x)).collect();
        let episode = as_f32(&self.episode);
        let step = as_f32(&self.step);
        let tensors: Vec<(String, Vec<usize>, &[f32])> = vec![
            ("obs".into(), vec![n, OBS_DIM], &self.obs),
            ("actions".into(), vec![n, self.action_dim()], &self.actions),
            (
                "executed".into(),
                vec![n, self.action_dim()],
                &self.executed,
            ),
            ("family".into(), vec![n], &family),
            ("episode".into(), vec![n], &episode),
            ("step".into(), vec![n], &step),
        ];
        let bev: Vec<(String, Vec<usize>, &[u8])> = match (self.bev_spec(), &self.bev) {
            (Some(spec), Some(data)) => {
                let [c, h, w] = spec.shape();
                vec![("bev".into(), vec![n, c, h, w], data.as_slice())]
            }
            _ => Vec::new(),
        };
        let path = dataset_path(dir);
        save_tensors_with_bytes(&path, &tensors, &bev, &self.metadata())?;
        Ok(path)
    }

    /// Loads `dir/demos.safetensors` (or `dir` itself when it is a file), validating kind,
    /// version, observation width against this build's simulator, and shapes.
    pub fn load(dir: &Path) -> Result<Dataset> {
        let path = if dir.is_file() {
            dir.to_path_buf()
        } else {
            dataset_path(dir)
        };
        let (meta, mut tensors, mut byte_tensors) =
            load_tensors_with_bytes(&path, DATASET_KIND, DATASET_SCHEMA_VERSION)?;
        let incompatible = |reason: String| meta.incompatible(reason);
        let obs_dim: usize = meta.field("obs_dim")?;
        if obs_dim != OBS_DIM {
            return Err(incompatible(format!(
                "recorded observations have {obs_dim} features (obs_dim), but this build's \
                 simulator produces {OBS_DIM}"
            )));
        }
        let config: Recording = meta.field("config")?;
        let episodes: Vec<EpisodeInfo> = meta.field("episodes")?;
        let n: usize = meta.field("n_samples")?;
        let a = config.sim.action_dim();
        if meta.field::<usize>("action_dim")? != a {
            return Err(incompatible(format!(
                "metadata action_dim disagrees with its sim config (2 x horizon = {a})"
            )));
        }
        let obs = take_tensor(&mut tensors, &path, DATASET_KIND, "obs", &[n, OBS_DIM])?;
        let actions = take_tensor(&mut tensors, &path, DATASET_KIND, "actions", &[n, a])?;
        let executed = take_tensor(&mut tensors, &path, DATASET_KIND, "executed", &[n, a])?;
        let family_f = take_tensor(&mut tensors, &path, DATASET_KIND, "family", &[n])?;
        let episode_f = take_tensor(&mut tensors, &path, DATASET_KIND, "episode", &[n])?;
        let step_f = take_tensor(&mut tensors, &path, DATASET_KIND, "step", &[n])?;
        let n_fam = Family::ALL.len() as f32;
        let n_ep = episodes.len() as f32;
        let whole = |x: f32, below: f32| x >= 0.0 && x < below && x.fract() == 0.0;
        if let Some(k) = (0..n).find(|&k| {
            !whole(family_f[k], n_fam)
                || !whole(episode_f[k], n_ep)
                || !whole(step_f[k], (1u32 << 24) as f32)
        }) {
            return Err(incompatible(format!(
                "sample {k} has an invalid family ({}), episode ({}) or step ({}) value",
                family_f[k], episode_f[k], step_f[k]
            )));
        }
        if let Some(k) = obs
            .iter()
            .chain(&actions)
            .chain(&executed)
            .position(|x| !x.is_finite())
        {
            return Err(incompatible(format!(
                "non-finite value at flat index {k} of obs/actions/executed"
            )));
        }
        let bev = match &config.demos.bev {
            None if byte_tensors.contains_key("bev") => {
                return Err(incompatible(
                    "it holds a `bev` tensor but its config records no demos.bev spec".into(),
                ))
            }
            None => None,
            Some(spec) => Some(load_bev(&meta, &mut byte_tensors, &path, spec, n)?),
        };
        Ok(Dataset {
            config,
            obs,
            actions,
            executed,
            family: family_f.iter().map(|&x| x as u8).collect(),
            episode: episode_f.iter().map(|&x| x as u32).collect(),
            step: step_f.iter().map(|&x| x as u32).collect(),
            bev,
            episodes,
        })
    }

    /// Train/validation split by EPISODE (samples of one episode are strongly correlated, so a
    /// per-sample split would leak). A seeded shuffle of episode ids; the first
    /// `round(val_fraction * episodes)` (at least 1) are validation. Returns sample indices
    /// (train, val), each ascending.
    pub fn split(&self, val_fraction: f32, seed: u64) -> Result<(Vec<usize>, Vec<usize>)> {
        let n_ep = self.episodes.len();
        if !(val_fraction > 0.0 && val_fraction < 1.0) {
            return Err(LearnError::Config(format!(
                "val_fraction must be in (0, 1), got {val_fraction}"
            )));
        }
        if n_ep < 2 {
            return Err(LearnError::Config(format!(
                "a train/validation split by episode needs at least 2 episodes, the dataset has \
                 {n_ep}: record more steps or worlds"
            )));
        }
        let n_val = ((val_fraction * n_ep as f32).round() as usize).clamp(1, n_ep - 1);
        let mut order: Vec<usize> = (0..n_ep).collect();
        seed::shuffle(&mut order, &mut seed::rng(seed, 0x5711_7000));
        let mut is_val = vec![false; n_ep];
        for &e in &order[..n_val] {
            is_val[e] = true;
        }
        let (mut train, mut val) = (Vec::new(), Vec::new());
        for (k, &e) in self.episode.iter().enumerate() {
            if is_val[e as usize] {
                val.push(k);
            } else {
                train.push(k);
            }
        }
        Ok((train, val))
    }
}
