//! Shared fixtures: recorded observations, a small SFT planner with realistic statistics, a
//! residual with a non-zero actor, and helpers to write and edit ONNX files.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use deltaplan_learn::actor_critic::{ActorCritic, ActorCriticConfig};
use deltaplan_learn::dataset::{record_demonstrations, Dataset, DemoConfig, Recording};
use deltaplan_learn::nn::OutputInit;
use deltaplan_learn::refine::policy_input_dim;
use deltaplan_learn::scenarios::TrainScenarios;
use deltaplan_learn::sft::{SftArch, SftPlanner};
use deltaplan_learn::FrozenPlanner;
use deltaplan_onnx::spec::PlannerSpec;
use deltaplan_onnx::SPEC_KEY;
use deltaplan_sim::{BatchEnv, BevSpec, Difficulty, Family, SimConfig, OBS_DIM};
use deltaplan_stdx::seed;
use prost::Message;
use tract_onnx::pb;

pub fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("deltaplan-onnx-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Expert demonstrations: `n_envs * steps` recorded observations (with DART noise).
pub fn recorded(n_envs: usize, steps: usize) -> Dataset {
    let rec = Recording {
        sim: SimConfig::default(),
        seed: 11,
        scenarios: TrainScenarios::default(),
        demos: DemoConfig {
            n_envs,
            steps,
            ..Default::default()
        },
    };
    record_demonstrations(&rec, |_| {}).unwrap()
}

/// The first `n` recorded observations, `[n, OBS_DIM]`.
pub fn observations(ds: &Dataset, n: usize) -> Vec<f32> {
    (0..n).flat_map(|k| ds.obs_row(k).to_vec()).collect()
}

/// An SFT planner of the default horizon with the dataset's statistics (random weights:
/// parity is about arithmetic, not skill).
pub fn sft_planner(ds: &Dataset, obs_dim: usize, horizon: usize, seed_: u64) -> SftPlanner {
    let arch = SftArch {
        obs_dim,
        hidden: vec![96, 64],
        z_dim: 32,
        head_hidden: vec![64],
        horizon,
        waypoint_dt: 0.2,
    };
    let mut p = SftPlanner::new(arch, seed_).unwrap();
    let n = ds.n_samples().min(2000);
    let (mut mean, mut sq) = (vec![0.0f64; OBS_DIM], vec![0.0f64; OBS_DIM]);
    for k in 0..n {
        for (j, &v) in ds.obs_row(k).iter().enumerate() {
            mean[j] += f64::from(v);
            sq[j] += f64::from(v) * f64::from(v);
        }
    }
    let mean: Vec<f32> = mean.iter().map(|m| (m / n as f64) as f32).collect();
    let std: Vec<f32> = sq
        .iter()
        .zip(&mean)
        .map(|(s, &m)| ((s / n as f64) - f64::from(m * m)).max(0.0).sqrt() as f32)
        .collect();
    let a = 2 * horizon;
    let act_mean: Vec<f32> = (0..a)
        .map(|k| {
            if k % 2 == 0 {
                2.0 * (k / 2 + 1) as f32
            } else {
                0.0
            }
        })
        .collect();
    let act_scale: Vec<f32> = (0..a).map(|k| if k % 2 == 0 { 8.0 } else { 1.5 }).collect();
    let (mean, std) = (mean[..obs_dim].to_vec(), std[..obs_dim].to_vec());
    p.set_normalisation(&mean, &std, &act_mean, &act_scale)
        .unwrap();
    p
}

/// A residual actor-critic on top of `planner` whose actor output is not zero (so the
/// correction is not trivially nothing).
pub fn residual(planner: &impl FrozenPlanner) -> ActorCritic {
    let a = planner.action_dim();
    let mut cfg = ActorCriticConfig::new(policy_input_dim(planner), a, &[48, 48], 1.0);
    cfg.actor_output = OutputInit::Orthogonal { gain: 1.0 };
    cfg.max_delta = (0..a).map(|k| if k % 2 == 0 { 4.0 } else { 1.0 }).collect();
    ActorCritic::new(&cfg, &mut seed::rng(7, 0)).unwrap()
}

pub fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

pub fn decode(bytes: &[u8]) -> pb::ModelProto {
    pb::ModelProto::decode(bytes).unwrap()
}

/// The model's embedded spec.
pub fn spec_of(model: &pb::ModelProto) -> PlannerSpec {
    let text = &model
        .metadata_props
        .iter()
        .find(|p| p.key == SPEC_KEY)
        .unwrap()
        .value;
    PlannerSpec::parse(text).unwrap()
}

/// Replaces the model's embedded spec.
pub fn set_spec(model: &mut pb::ModelProto, spec: &PlannerSpec) {
    model.metadata_props.retain(|p| p.key != SPEC_KEY);
    model.metadata_props.push(pb::StringStringEntryProto {
        key: SPEC_KEY.into(),
        value: spec.to_toml(),
    });
}

/// Largest absolute difference.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The BEV-CNN planner trained in PyTorch (`python/train_bev_planner.py`), with its sidecar spec.
pub fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bev_cnn.onnx")
}

/// `worlds * steps` observations carrying `raster`, the expert driving.
pub fn raster_observations(raster: BevSpec, worlds: usize, steps: usize) -> Vec<f32> {
    let cfg = SimConfig::default();
    let mut env = BatchEnv::train(cfg, worlds, 3, Family::ALL.to_vec(), Difficulty::default())
        .with_bev_observation(raster)
        .unwrap();
    let od = env.obs_dim();
    let mut buf = deltaplan_sim::StepBuffers::with_obs_dim(worlds, od);
    let mut plans = vec![0.0; worlds * cfg.action_dim()];
    let mut out = Vec::with_capacity(worlds * steps * od);
    let mut obs = vec![0.0; worlds * od];
    for _ in 0..steps {
        env.observe(&mut obs);
        out.extend_from_slice(&obs);
        env.expert_actions(&mut plans);
        env.step(&plans, &mut buf);
    }
    out
}
