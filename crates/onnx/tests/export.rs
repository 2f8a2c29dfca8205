//! ONNX out and refinement of ONNX planners: the exported refined planner reproduces
//! deltaplan's own waypoints (tract reads it back), iteration 0 of a refined ONNX planner is
//! the ONNX planner exactly, the residual stays bounded, and checkpoints know their planner.

mod common;

use common::*;
use deltaplan_learn::refine::{load_policy, RefineConfig, Refiner, ResidualPlanner};
use deltaplan_learn::scenarios::TrainScenarios;
use deltaplan_learn::FrozenPlanner;
use deltaplan_onnx::{export_refined, export_sft, Frozen, OnnxPlanner, OnnxWorkspace, Residual};
use deltaplan_sim::{SimConfig, OBS_DIM};

fn plans_of(p: &OnnxPlanner, obs: &[f32]) -> Vec<f32> {
    let b = obs.len() / OBS_DIM;
    let mut wp = vec![0.0; b * p.action_dim()];
    let mut z = vec![0.0; b * p.embedding_dim()];
    p.plan_batch(obs, &mut OnnxWorkspace::default(), &mut wp, &mut z)
        .unwrap();
    wp
}

#[test]
fn the_exported_refined_built_in_planner_reproduces_deltaplans_waypoints() {
    let ds = recorded(25, 40); // 1,000 recorded observations
    let sft = sft_planner(&ds, OBS_DIM, 10, 1);
    let ac = residual(&sft);
    let ramp = 0.75;
    let obs = observations(&ds, 1000);
    let mut ours = vec![0.0; 1000 * 20];
    ResidualPlanner::new(&sft, &ac, ramp)
        .plan(&obs, &mut ours)
        .unwrap();
    let dir = tmpdir("refined-sft");
    let bytes = export_refined(Frozen::Sft(&sft), Residual { ac: &ac, ramp }).unwrap();
    let exported =
        OnnxPlanner::load(&write(&dir, "rl.onnx", &bytes), &SimConfig::default()).unwrap();
    assert_eq!(exported.embedding_dim(), 0);
    let theirs = plans_of(&exported, &obs);
    let d = max_abs_diff(&ours, &theirs);
    assert!(d < 1e-5, "refined waypoints differ by {d}");
    // The residual does something, and no more than its bound.
    let frozen = plans_of(
        &OnnxPlanner::load(
            &write(&dir, "sft.onnx", &export_sft(&sft).unwrap()),
            &SimConfig::default(),
        )
        .unwrap(),
        &obs,
    );
    let mut moved = 0.0f32;
    for (k, (r, f)) in theirs.iter().zip(&frozen).enumerate() {
        let bound = ramp * ac.max_delta[k % 20];
        assert!((r - f).abs() <= bound + 1e-4, "coordinate {k}: {r} vs {f}");
        moved = moved.max((r - f).abs());
    }
    assert!(
        moved > 0.1,
        "the residual moved the plan by at most {moved} m"
    );
}

#[test]
fn the_exported_refined_onnx_planner_reproduces_deltaplans_waypoints() {
    // An ONNX planner whose spec comes from a sidecar file and that exposes no embedding.
    let ds = recorded(25, 40);
    let sft = sft_planner(&ds, OBS_DIM, 10, 3);
    let dir = tmpdir("refined-onnx");
    let mut model = decode(&export_sft(&sft).unwrap());
    let mut spec = spec_of(&model);
    spec.output.embedding = None;
    spec.normalisation = None;
    model.metadata_props.clear();
    let path = write(&dir, "theirs.onnx", &prost::Message::encode_to_vec(&model));
    std::fs::write(dir.join("theirs.toml"), spec.to_toml()).unwrap();
    let frozen = OnnxPlanner::load(&path, &SimConfig::default()).unwrap();
    assert_eq!(frozen.embedding_dim(), 0);
    let ac = residual(&frozen);
    let obs = observations(&ds, 1000);
    let mut ours = vec![0.0; 1000 * 20];
    ResidualPlanner::new(&frozen, &ac, 1.0)
        .plan(&obs, &mut ours)
        .unwrap();
    let bytes = export_refined(Frozen::Onnx(&frozen), Residual { ac: &ac, ramp: 1.0 }).unwrap();
    let exported =
        OnnxPlanner::load(&write(&dir, "rl.onnx", &bytes), &SimConfig::default()).unwrap();
    let d = max_abs_diff(&ours, &plans_of(&exported, &obs));
    assert!(d < 1e-5, "refined waypoints differ by {d}");
    // Same interface as the frozen planner: its input and its waypoint output's name.
    let out = decode(&bytes);
    let g = out.graph.as_ref().unwrap();
    assert_eq!(g.input[0].name, "obs");
    assert_eq!(g.output.len(), 1);
    assert_eq!(g.output[0].name, "waypoints");
}

fn tiny_refine() -> RefineConfig {
    let mut cfg = RefineConfig {
        num_envs: 8,
        rollout_steps: 16,
        iterations: 2,
        hidden: vec![32, 32],
        ..Default::default()
    };
    cfg.ppo.num_minibatches = 2;
    cfg.ppo.critic_warmup_iters = 0;
    cfg
}

#[test]
fn refining_an_onnx_planner_starts_from_it_exactly_and_checkpoints_know_it() {
    let ds = recorded(16, 40);
    let dir = tmpdir("refine");
    let sim = SimConfig::default();
    let planner = OnnxPlanner::load(
        &write(
            &dir,
            "p.onnx",
            &export_sft(&sft_planner(&ds, OBS_DIM, 10, 1)).unwrap(),
        ),
        &sim,
    )
    .unwrap();
    let mut r = Refiner::new(tiny_refine(), sim, TrainScenarios::default(), &planner, 5).unwrap();
    // Iteration 0: the refined planner is the ONNX planner, bit for bit.
    let obs = observations(&ds, 300);
    let mut refined = vec![0.0; 300 * 20];
    ResidualPlanner::new(&planner, r.actor_critic(), r.ramp())
        .plan(&obs, &mut refined)
        .unwrap();
    assert_eq!(refined, plans_of(&planner, &obs));
    // It trains: the actor moves away from the identity.
    let before = r.actor_critic().actor.params().to_vec();
    for _ in 0..2 {
        let s = r.iterate().unwrap();
        assert!(s.policy_loss.is_finite() && s.value_loss.is_finite());
    }
    assert_ne!(r.actor_critic().actor.params(), &before[..]);
    let ckpt = dir.join("rl.safetensors");
    r.save(&ckpt).unwrap();
    drop(r);
    // The checkpoint loads on its planner and is refused on another one.
    assert!(load_policy(&ckpt, &planner).is_ok());
    assert!(Refiner::resume(&ckpt, &planner).is_ok());
    let other = OnnxPlanner::load(
        &write(
            &dir,
            "q.onnx",
            &export_sft(&sft_planner(&ds, OBS_DIM, 10, 2)).unwrap(),
        ),
        &sim,
    )
    .unwrap();
    let err = load_policy(&ckpt, &other).err().unwrap().to_string();
    assert!(err.contains("trained on another SFT planner"), "{err}");
}
