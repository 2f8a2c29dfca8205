//! A planner nobody wrote in Rust: the BEV-CNN planner trained in PyTorch and exported with
//! `torch.onnx.export` (`python/train_bev_planner.py`; the committed fixture
//! `tests/fixtures/bev_cnn.onnx` with its sidecar spec). It reads the raster its spec names
//! and the raster matters to it; its refinement starts from it exactly; the refined planner
//! exports to one graph that reproduces deltaplan's waypoints; a spec that does not fit the
//! graph is refused naming the input.

mod common;

use std::path::Path;

use common::*;
use deltaplan_learn::refine::{policy_input_dim, RefineConfig, Refiner, ResidualPlanner};
use deltaplan_learn::scenarios::TrainScenarios;
use deltaplan_learn::FrozenPlanner;
use deltaplan_onnx::{export_refined, Frozen, OnnxError, OnnxPlanner, OnnxWorkspace, Residual};
use deltaplan_sim::bev::channel;
use deltaplan_sim::{SimConfig, OBS_DIM};

fn load(path: &Path) -> Result<OnnxPlanner, OnnxError> {
    OnnxPlanner::load(path, &SimConfig::default())
}

fn plans_of(p: &OnnxPlanner, obs: &[f32]) -> Vec<f32> {
    let b = obs.len() / p.obs_dim();
    let mut wp = vec![0.0; b * p.action_dim()];
    let mut z = vec![0.0; b * p.embedding_dim()];
    p.plan_batch(obs, &mut OnnxWorkspace::default(), &mut wp, &mut z)
        .unwrap();
    wp
}

#[test]
fn the_pytorch_planner_reads_the_raster_its_spec_names() {
    let p = load(&fixture()).unwrap();
    let raster = p.bev_observation().expect("a raster planner");
    assert_eq!((raster.height, raster.width), (32, 32));
    assert_eq!(raster.metres_per_pixel, 1.5);
    assert_eq!(p.obs_dim(), OBS_DIM + 9 * 32 * 32);
    assert_eq!(p.residual_obs_dim(), OBS_DIM);
    assert_eq!(p.embedding_dim(), 128);
    assert_eq!(policy_input_dim(&p), 128 + 20 + OBS_DIM);

    let obs = raster_observations(raster, 10, 30);
    let od = p.obs_dim();
    let plans = plans_of(&p, &obs);
    assert!(plans.iter().all(|v| v.is_finite()));
    // A trained planner drives forward: the last waypoint lies ahead on average.
    let ahead: f32 = plans.chunks_exact(20).map(|w| w[18]).sum::<f32>() / (plans.len() / 20) as f32;
    assert!(ahead > 2.0, "mean last waypoint {ahead} m ahead");
    // Rows are planned independently of the batch they come in (chunks of 64 rows, any
    // thread count): a batch of 7 rows plans as those rows did in the batch of 300.
    let few = plans_of(&p, &obs[5 * od..12 * od]);
    assert!(few == plans[5 * 20..12 * 20]);
    let one_thread = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap()
        .install(|| plans_of(&p, &obs));
    assert!(one_thread == plans, "plans differ between thread counts");
    // The raster matters: erasing the other vehicles changes the plans of rows that show some.
    let plane = raster.plane();
    let vehicles = OBS_DIM + channel::VEHICLES * plane;
    let mut erased = obs.clone();
    let mut with_vehicles = 0;
    for row in erased.chunks_exact_mut(od) {
        let v = &mut row[vehicles..vehicles + plane];
        if v.iter().any(|&x| x > 0.0) {
            with_vehicles += 1;
        }
        v.fill(0.0);
    }
    assert!(with_vehicles > 50, "{with_vehicles} rows show vehicles");
    let d = max_abs_diff(&plans, &plans_of(&p, &erased));
    assert!(
        d > 0.05,
        "erasing the vehicles moved the plans by at most {d} m"
    );
}

#[test]
fn the_refined_pytorch_planner_starts_from_it_and_exports_to_one_graph() {
    let p = load(&fixture()).unwrap();
    let raster = p.bev_observation().unwrap();
    let obs = raster_observations(raster, 25, 40); // 1,000 observations
    let frozen = plans_of(&p, &obs);

    // Iteration 0 of a refinement is the PyTorch planner exactly.
    let cfg = RefineConfig {
        num_envs: 4,
        rollout_steps: 8,
        iterations: 2,
        ..Default::default()
    };
    let mut r = Refiner::new(cfg, SimConfig::default(), TrainScenarios::default(), &p, 1).unwrap();
    let mut planned = vec![0.0; frozen.len()];
    ResidualPlanner::new(&p, r.actor_critic(), 1.0)
        .plan(&obs, &mut planned)
        .unwrap();
    assert!(planned == frozen, "iteration 0 is the frozen planner");
    let s = r.iterate().unwrap();
    assert!(s.value_loss.is_finite() && s.env_steps == 4 * 8);

    // The refined planner (a residual that moves the plans) as one graph, read back by tract.
    let ac = residual(&p);
    let ramp = 0.6;
    let mut ours = vec![0.0; frozen.len()];
    ResidualPlanner::new(&p, &ac, ramp)
        .plan(&obs, &mut ours)
        .unwrap();
    assert!(
        max_abs_diff(&ours, &frozen) > 0.1,
        "the residual must move the plans"
    );
    let dir = tmpdir("bev-refined");
    let bytes = export_refined(Frozen::Onnx(&p), Residual { ac: &ac, ramp }).unwrap();
    let exported = load(&write(&dir, "rl.onnx", &bytes)).unwrap();
    assert_eq!(exported.bev_observation(), Some(raster));
    let spec = exported.spec();
    assert_eq!(spec.observation.input.as_deref(), Some("bev"));
    assert_eq!(spec.observation.vector_input.as_deref(), Some("obs"));
    let theirs = plans_of(&exported, &obs);
    let d = max_abs_diff(&ours, &theirs);
    assert!(d < 1e-5, "refined waypoints differ by {d}");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn a_spec_that_does_not_fit_the_graph_is_refused_naming_the_input() {
    let dir = tmpdir("bev-refusals");
    let model = std::fs::read(fixture()).unwrap();
    let spec = std::fs::read_to_string(fixture().with_extension("toml")).unwrap();
    let try_spec = |name: &str, text: String| {
        let path = write(&dir, &format!("{name}.onnx"), &model);
        write(&dir, &format!("{name}.toml"), text.as_bytes());
        load(&path).unwrap_err().to_string()
    };
    let err = try_spec("taller", spec.replace("height = 32", "height = 64"));
    assert!(
        err.contains("`bev`")
            && err.contains("[batch, 9, 64, 32]")
            && err.contains("[batch, 9, 32, 32]"),
        "{err}"
    );
    let err = try_spec(
        "novector",
        spec.replace("vector_input = \"obs\"", "vector_input = \"speed\""),
    );
    assert!(
        err.contains("observation.vector_input") && err.contains("`speed`"),
        "{err}"
    );
    let vector = spec
        .replace("kind = \"bev\"", "kind = \"vector\"")
        .replace("vector_input = \"obs\"\n", "");
    let vector = vector[..vector.find("[observation.bev]").unwrap()].to_string()
        + &vector[vector.find("[output]").unwrap()..];
    let err = try_spec("asvector", vector);
    assert!(
        err.contains("`bev`") && err.contains(&format!("[batch, {OBS_DIM}]")),
        "{err}"
    );
    std::fs::remove_dir_all(dir).ok();
}
