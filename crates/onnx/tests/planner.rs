//! Loading ONNX planners: the ONNX copy of the built-in planner plans like it, the hash is the
//! file's, and every way a model can fail to fit is refused with an error naming it.

mod common;

use common::*;
use deltaplan_learn::sft::SftWorkspace;
use deltaplan_learn::{FrozenPlanner, PlannerError};
use deltaplan_onnx::spec::{sidecar_path, ObservationKind};
use deltaplan_onnx::{export_sft, BatchDim, OnnxError, OnnxPlanner, OnnxWorkspace};
use deltaplan_sim::{SimConfig, OBS_DIM};
use prost::Message;
use sha2::{Digest, Sha256};

fn onnx_plans(p: &OnnxPlanner, obs: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let b = obs.len() / OBS_DIM;
    let mut wp = vec![0.0; b * p.action_dim()];
    let mut z = vec![0.0; b * p.embedding_dim()];
    p.plan_batch(obs, &mut OnnxWorkspace::default(), &mut wp, &mut z)
        .unwrap();
    (wp, z)
}

fn load_err(path: &std::path::Path, sim: &SimConfig) -> String {
    OnnxPlanner::load(path, sim).unwrap_err().to_string()
}

#[test]
fn the_onnx_copy_of_the_sft_planner_plans_its_waypoints_and_embedding() {
    let ds = recorded(16, 40);
    let sft = sft_planner(&ds, OBS_DIM, 10, 1);
    let dir = tmpdir("copy");
    let path = write(&dir, "sft.onnx", &export_sft(&sft).unwrap());
    let p = OnnxPlanner::load(&path, &SimConfig::default()).unwrap();
    assert_eq!(p.batch_dim(), BatchDim::Dynamic);
    assert_eq!(
        (p.obs_dim(), p.horizon(), p.embedding_dim()),
        (OBS_DIM, 10, 32)
    );
    // The residual normalises with the statistics the SFT planner was trained with.
    assert_eq!(p.obs_normalisation().0, sft.obs_mean());
    assert_eq!(p.obs_normalisation().1, sft.obs_std());
    let obs = observations(&ds, 600); // 9 full chunks and a partial one
    let (wp, z) = onnx_plans(&p, &obs);
    let b = obs.len() / OBS_DIM;
    let (mut z_ref, mut wp_ref) = (vec![0.0; b * 32], vec![0.0; b * 20]);
    sft.forward(&obs, &mut SftWorkspace::new(), &mut z_ref, &mut wp_ref)
        .unwrap();
    let (dw, dz) = (max_abs_diff(&wp, &wp_ref), max_abs_diff(&z, &z_ref));
    assert!(dw < 1e-5, "waypoints differ by {dw}");
    assert!(dz < 1e-6, "embeddings differ by {dz}");
    // Not a constant: the plans vary with the observation.
    assert!(max_abs_diff(&wp[..20], &wp[20 * 300..20 * 301]) > 1e-3);
    // Deterministic, and the same bits whatever the thread count.
    let one_thread = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap()
        .install(|| onnx_plans(&p, &obs));
    assert_eq!(one_thread, (wp, z));
}

#[test]
fn the_weights_hash_is_the_files_sha256_and_tells_planners_apart() {
    let ds = recorded(8, 10);
    let dir = tmpdir("hash");
    let bytes_a = export_sft(&sft_planner(&ds, OBS_DIM, 10, 1)).unwrap();
    let bytes_b = export_sft(&sft_planner(&ds, OBS_DIM, 10, 2)).unwrap();
    let a = OnnxPlanner::load(&write(&dir, "a.onnx", &bytes_a), &SimConfig::default()).unwrap();
    let b = OnnxPlanner::load(&write(&dir, "b.onnx", &bytes_b), &SimConfig::default()).unwrap();
    assert_eq!(a.weights_hash(), format!("{:x}", Sha256::digest(&bytes_a)));
    assert_ne!(a.weights_hash(), b.weights_hash());
}

#[test]
fn a_fixed_batch_model_plans_any_batch_in_padded_chunks() {
    let ds = recorded(8, 10);
    let sft = sft_planner(&ds, OBS_DIM, 10, 1);
    let dir = tmpdir("fixed");
    let mut model = decode(&export_sft(&sft).unwrap());
    let graph = model.graph.as_mut().unwrap();
    use tract_onnx::pb::tensor_shape_proto::dimension::Value;
    let tract_onnx::pb::type_proto::Value::TensorType(t) = graph.input[0]
        .r#type
        .as_mut()
        .unwrap()
        .value
        .as_mut()
        .unwrap();
    t.shape.as_mut().unwrap().dim[0].value = Some(Value::DimValue(7));
    let fixed = OnnxPlanner::load(
        &write(&dir, "fixed.onnx", &model.encode_to_vec()),
        &SimConfig::default(),
    )
    .unwrap();
    assert_eq!(fixed.batch_dim(), BatchDim::Fixed(7));
    let obs = observations(&ds, 30); // 4 chunks of 7 and one of 2 (padded)
    let (wp, _) = onnx_plans(&fixed, &obs);
    let mut wp_ref = vec![0.0; 30 * 20];
    sft.forward(
        &obs,
        &mut SftWorkspace::new(),
        &mut vec![0.0; 30 * 32],
        &mut wp_ref,
    )
    .unwrap();
    assert!(max_abs_diff(&wp, &wp_ref) < 1e-5);
}

#[test]
fn a_corrupted_or_foreign_file_is_refused_as_not_onnx() {
    let ds = recorded(8, 10);
    let bytes = export_sft(&sft_planner(&ds, OBS_DIM, 10, 1)).unwrap();
    let dir = tmpdir("corrupt");
    let sim = SimConfig::default();
    for (name, data) in [
        ("truncated.onnx", bytes[..bytes.len() / 2].to_vec()),
        ("text.onnx", b"this is not a model at all".to_vec()),
        ("empty.onnx", Vec::new()),
    ] {
        let err = OnnxPlanner::load(&write(&dir, name, &data), &sim).unwrap_err();
        assert!(matches!(err, OnnxError::Corrupt { .. }), "{name}: {err}");
        let msg = err.to_string();
        assert!(
            msg.contains(name) && msg.contains("export it again"),
            "{msg}"
        );
    }
    let err = load_err(&dir.join("missing.onnx"), &sim);
    assert!(
        err.contains("cannot read") && err.contains("missing.onnx"),
        "{err}"
    );
}

#[test]
fn a_wrong_input_shape_is_refused_with_both_shapes() {
    let ds = recorded(8, 10);
    let dir = tmpdir("input");
    let narrow = export_sft(&sft_planner(&ds, 64, 10, 1)).unwrap();
    let err =
        OnnxPlanner::load(&write(&dir, "narrow.onnx", &narrow), &SimConfig::default()).unwrap_err();
    assert!(matches!(err, OnnxError::InputShape { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("[batch, 64]")
            && msg.contains(&format!("[batch, {OBS_DIM}]"))
            && msg.contains("`obs`"),
        "{msg}"
    );
}

#[test]
fn a_missing_output_is_refused_with_the_graphs_outputs() {
    let ds = recorded(8, 10);
    let dir = tmpdir("output");
    let mut model = decode(&export_sft(&sft_planner(&ds, OBS_DIM, 10, 1)).unwrap());
    let mut spec = spec_of(&model);
    spec.output.embedding = Some("features".into());
    set_spec(&mut model, &spec);
    let path = write(&dir, "m.onnx", &model.encode_to_vec());
    let err = OnnxPlanner::load(&path, &SimConfig::default()).unwrap_err();
    assert!(matches!(err, OnnxError::MissingOutput { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("embedding output `features`") && msg.contains("[waypoints, z]"),
        "{msg}"
    );
}

#[test]
fn an_operator_tract_lacks_is_refused_by_name() {
    let ds = recorded(8, 10);
    let dir = tmpdir("op");
    let mut model = decode(&export_sft(&sft_planner(&ds, OBS_DIM, 10, 1)).unwrap());
    let node = model
        .graph
        .as_mut()
        .unwrap()
        .node
        .iter_mut()
        .find(|n| n.op_type == "Tanh")
        .unwrap();
    node.op_type = "Loop".into();
    let node_name = node.name.clone();
    let err = load_err(
        &write(&dir, "loop.onnx", &model.encode_to_vec()),
        &SimConfig::default(),
    );
    assert!(
        err.contains("operator `Loop`") && err.contains(&node_name) && err.contains("tract"),
        "{err}"
    );
}

#[test]
fn a_horizon_mismatch_is_refused_from_the_spec_and_from_the_graph() {
    let ds = recorded(8, 10);
    let dir = tmpdir("horizon");
    let ten = write(
        &dir,
        "ten.onnx",
        &export_sft(&sft_planner(&ds, OBS_DIM, 10, 1)).unwrap(),
    );
    // The simulator wants 8 waypoints; the spec says 10.
    let sim8 = SimConfig {
        horizon: 8,
        ..SimConfig::default()
    };
    let err = OnnxPlanner::load(&ten, &sim8).unwrap_err();
    assert!(matches!(err, OnnxError::Horizon { .. }), "{err}");
    assert!(err.to_string().contains("plans 10 waypoints"), "{err}");
    assert!(err.to_string().contains("expects 8 waypoints"), "{err}");
    // The spec claims 10 but the graph outputs 8.
    let mut model = decode(&export_sft(&sft_planner(&ds, OBS_DIM, 8, 1)).unwrap());
    let mut spec = spec_of(&model);
    spec.output.horizon = 10;
    set_spec(&mut model, &spec);
    let err = load_err(
        &write(&dir, "lying.onnx", &model.encode_to_vec()),
        &SimConfig::default(),
    );
    assert!(
        err.contains("plans 8 waypoints") && err.contains("its output `waypoints`"),
        "{err}"
    );
    // The waypoint spacing is part of the contract too.
    let mut model = decode(&std::fs::read(&ten).unwrap());
    let mut spec = spec_of(&model);
    spec.output.waypoint_dt = 0.5;
    set_spec(&mut model, &spec);
    let err = load_err(
        &write(&dir, "slow.onnx", &model.encode_to_vec()),
        &SimConfig::default(),
    );
    assert!(
        err.contains("0.5 s apart") && err.contains("0.2 s apart"),
        "{err}"
    );
}

#[test]
fn non_finite_outputs_are_refused_naming_the_row() {
    let ds = recorded(8, 10);
    let dir = tmpdir("nan");
    let mut sft = sft_planner(&ds, OBS_DIM, 10, 1);
    // A NaN in the waypoint head's last bias: every plan has a NaN coordinate.
    let head = sft.head_mut();
    let n = head.num_params();
    head.params_mut()[n - 1] = f32::NAN;
    let p = OnnxPlanner::load(
        &write(&dir, "nan.onnx", &export_sft(&sft).unwrap()),
        &SimConfig::default(),
    )
    .unwrap();
    let obs = observations(&ds, 3);
    let mut wp = vec![0.0; 3 * 20];
    let mut z = vec![0.0; 3 * 32];
    let err = p
        .plan_batch(&obs, &mut OnnxWorkspace::default(), &mut wp, &mut z)
        .unwrap_err();
    match err {
        PlannerError::Failed(msg) => assert!(
            msg.contains("non-finite waypoint for observation 0") && msg.contains("nan.onnx"),
            "{msg}"
        ),
        other => panic!("expected a planner failure, got {other:?}"),
    }
}

#[test]
fn the_spec_comes_from_the_metadata_or_the_sidecar_never_both_never_neither() {
    let ds = recorded(8, 10);
    let dir = tmpdir("spec");
    let sim = SimConfig::default();
    let mut model = decode(&export_sft(&sft_planner(&ds, OBS_DIM, 10, 1)).unwrap());
    let spec = spec_of(&model);
    model.metadata_props.clear();
    let path = write(&dir, "bare.onnx", &model.encode_to_vec());
    let err = load_err(&path, &sim);
    assert!(
        err.contains("no deltaplan planner spec") && err.contains("bare.toml"),
        "{err}"
    );
    // The sidecar is read and hashed with the model.
    std::fs::write(sidecar_path(&path), spec.to_toml()).unwrap();
    let p = OnnxPlanner::load(&path, &sim).unwrap();
    assert_eq!(p.spec(), &spec);
    let mut h = Sha256::new();
    h.update(std::fs::read(&path).unwrap());
    h.update(spec.to_toml().as_bytes());
    assert_eq!(p.weights_hash(), format!("{:x}", h.finalize()));
    // Metadata and sidecar: ambiguous, refused.
    set_spec(&mut model, &spec);
    std::fs::write(&path, model.encode_to_vec()).unwrap();
    let err = load_err(&path, &sim);
    assert!(err.contains("remove one"), "{err}");
    // A spec with a mistake names it.
    std::fs::remove_file(sidecar_path(&path)).unwrap();
    let mut bad = spec.clone();
    bad.observation.input = Some("image".into());
    set_spec(&mut model, &bad);
    std::fs::write(&path, model.encode_to_vec()).unwrap();
    let err = load_err(&path, &sim);
    assert!(
        err.contains("no input `image`") && err.contains("[obs]"),
        "{err}"
    );
}

#[test]
fn a_vector_model_declared_a_raster_planner_is_refused_naming_its_input() {
    let ds = recorded(8, 10);
    let dir = tmpdir("bev");
    let mut model = decode(&export_sft(&sft_planner(&ds, OBS_DIM, 10, 1)).unwrap());
    let mut spec = spec_of(&model);
    spec.observation.kind = ObservationKind::Bev;
    // The spec says a raster without saying which: refused before the graph is read.
    set_spec(&mut model, &spec);
    let err = load_err(
        &write(&dir, "bev.onnx", &model.encode_to_vec()),
        &SimConfig::default(),
    );
    assert!(err.contains("[observation.bev]"), "{err}");
    // With a raster, the model's `[batch, 128]` input is not one.
    spec.observation.bev = Some(deltaplan_sim::BevSpec::default());
    set_spec(&mut model, &spec);
    let err = load_err(
        &write(&dir, "bev.onnx", &model.encode_to_vec()),
        &SimConfig::default(),
    );
    assert!(
        err.contains("`obs`")
            && err.contains("[batch, 9, 64, 64]")
            && err.contains(&format!("[batch, {OBS_DIM}]")),
        "{err}"
    );
}

/// A damaged model on which tract's graph analysis panics (`no entry found for key`; found by
/// `tests/fuzz.rs` among 20,000 mutants of an exported planner, kept as a fixture) is an error
/// naming the file, not a crash.
#[test]
fn a_model_tract_panics_on_is_refused_naming_the_file() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tract_panic.onnx");
    let loaded = std::panic::catch_unwind(|| OnnxPlanner::load(&path, &SimConfig::default()));
    let err = loaded
        .expect("loading must not panic")
        .expect_err("a damaged model")
        .to_string();
    assert!(err.contains("tract_panic.onnx"), "{err}");
}
