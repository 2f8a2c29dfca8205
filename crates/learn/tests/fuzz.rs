//! Fuzzing of every file format deltaplan reads (demonstrations, SFT and refinement
//! checkpoints: safetensors + metadata JSON) with damaged variants of valid files: no panic,
//! bounded time per input, and every refusal an error naming the file. Structure-aware
//! variants (metadata fields removed, retyped or out of range, tensors dropped or reshaped,
//! re-hashed so they pass the content hash) reach the typed loaders behind the hash.
//!
//! The suite runs a short version; `DELTAPLAN_FUZZ_INPUTS=N cargo test --release -p
//! deltaplan-learn --test fuzz -- --ignored` runs N inputs per format.

use std::path::{Path, PathBuf};

use deltaplan_learn::checkpoint::{load_tensors, save_tensors};
use deltaplan_learn::dataset::{record_demonstrations, DemoConfig, Recording};
use deltaplan_learn::refine::{load_policy, RefineConfig, Refiner};
use deltaplan_learn::scenarios::TrainScenarios;
use deltaplan_learn::sft::{train_sft, SftPlanner, SftTrainConfig};
use deltaplan_learn::Dataset;
use deltaplan_sim::SimConfig;
use deltaplan_stdx::fuzz::{fuzz, FuzzStats};

fn dir() -> PathBuf {
    let base = Path::new("/dev/shm");
    let base = if base.is_dir() {
        base.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let d = base.join(format!("deltaplan-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Small valid files of each format: (demos, sft, rl) paths, and the SFT planner.
fn valid_files(d: &Path) -> (PathBuf, PathBuf, PathBuf, SftPlanner) {
    let rec = Recording {
        sim: SimConfig::default(),
        seed: 1,
        scenarios: TrainScenarios::default(),
        demos: DemoConfig {
            n_envs: 4,
            steps: 24,
            ..Default::default()
        },
    };
    let ds = record_demonstrations(&rec, |_| {}).unwrap();
    let demos = ds.save(d).unwrap();
    let cfg = SftTrainConfig {
        hidden: vec![8],
        z_dim: 4,
        head_hidden: vec![],
        epochs: 1,
        batch_size: 16,
        ..Default::default()
    };
    let (sft, _) = train_sft(&cfg, &ds, 1, |_| {}).unwrap();
    let sft_path = d.join("sft.safetensors");
    sft.save(&sft_path).unwrap();
    let mut rcfg = RefineConfig {
        num_envs: 2,
        rollout_steps: 8,
        iterations: 1,
        hidden: vec![4],
        ..Default::default()
    };
    rcfg.ppo.num_minibatches = 1;
    let mut r = Refiner::new(
        rcfg,
        SimConfig::default(),
        TrainScenarios::default(),
        &sft,
        1,
    )
    .unwrap();
    r.iterate().unwrap();
    let rl = d.join("rl.safetensors");
    r.save(&rl).unwrap();
    drop(r);
    (demos, sft_path, rl, sft)
}

/// Re-hashed structural variants of a valid file: each metadata field removed, nulled,
/// negated, made huge or a string; each tensor dropped or flattened.
fn structural_variants(path: &Path, kind: &str, version: u32) -> Vec<Vec<u8>> {
    let (meta, tensors) = load_tensors(path, kind, version).unwrap();
    let json = meta.json().as_object().unwrap().clone();
    let scratch = path.with_extension("variant");
    let mut out = Vec::new();
    let mut save = |json: &serde_json::Map<String, serde_json::Value>,
                    tensors: &Vec<(String, Vec<usize>, Vec<f32>)>| {
        let views: Vec<(String, Vec<usize>, &[f32])> = tensors
            .iter()
            .map(|(n, s, d)| (n.clone(), s.clone(), d.as_slice()))
            .collect();
        let value = serde_json::Value::Object(json.clone());
        if save_tensors(&scratch, &views, &value).is_ok() {
            out.push(std::fs::read(&scratch).unwrap());
        }
    };
    let owned: Vec<(String, Vec<usize>, Vec<f32>)> = tensors
        .iter()
        .map(|(n, (s, d))| (n.clone(), s.clone(), d.clone()))
        .collect();
    for key in json.keys().filter(|k| *k != "content_sha256") {
        for replacement in [
            None,
            Some(serde_json::Value::Null),
            Some(serde_json::json!(-1)),
            Some(serde_json::json!(1e300)),
            Some(serde_json::json!(u64::MAX)),
            Some(serde_json::json!("x")),
            Some(serde_json::json!([])),
        ] {
            let mut j = json.clone();
            match replacement {
                None => {
                    j.remove(key);
                }
                Some(v) => {
                    j.insert(key.clone(), v);
                }
            }
            save(&j, &owned);
        }
    }
    for i in 0..owned.len() {
        let mut t = owned.clone();
        t.remove(i);
        save(&json, &t);
        let mut t = owned.clone();
        let n = t[i].2.len();
        t[i].1 = vec![n];
        save(&json, &t);
        let mut t = owned.clone();
        t[i].2.truncate(n / 2);
        t[i].1 = vec![n / 2];
        save(&json, &t);
    }
    std::fs::remove_file(&scratch).ok();
    out
}

/// Fuzzes one format: `n` mutants plus every structural variant, each written to `target` and
/// loaded by `load`.
fn fuzz_format(
    name: &str,
    seed_file: &Path,
    structural: Vec<Vec<u8>>,
    n: u64,
    target: &Path,
    load: impl Fn(&Path) -> Result<(), String>,
) -> FuzzStats {
    let file_name = target.file_name().unwrap().to_string_lossy().into_owned();
    let named = |m: &str| m.contains(&file_name);
    let parse = |bytes: &[u8]| {
        std::fs::write(target, bytes).unwrap();
        load(target)
    };
    // Every structural variant, exactly once (no mutation).
    for (k, v) in structural.iter().enumerate() {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| parse(v)));
        match r {
            Ok(Err(m)) => assert!(named(&m), "{name} variant {k}: {m}"),
            Ok(Ok(())) => {}
            Err(_) => panic!("{name} structural variant {k} panicked"),
        }
    }
    let mut seeds = vec![std::fs::read(seed_file).unwrap()];
    seeds.extend(structural);
    let stats = fuzz(&seeds, n, 7, parse, named);
    stats.print_and_check(name);
    stats
}

fn fuzz_all(n: u64) {
    let d = dir();
    let (demos, sft_path, rl, sft) = valid_files(&d);
    let target = d.join("target");
    std::fs::create_dir_all(&target).unwrap();
    let s = structural_variants(
        &demos,
        "demonstrations",
        deltaplan_learn::dataset::DATASET_SCHEMA_VERSION,
    );
    fuzz_format(
        "demonstrations",
        &demos,
        s,
        n,
        &target.join("demos.safetensors"),
        |p| Dataset::load(p).map(|_| ()).map_err(|e| e.to_string()),
    );
    let s = structural_variants(
        &sft_path,
        "sft_planner",
        deltaplan_learn::sft::planner::SFT_SCHEMA_VERSION,
    );
    fuzz_format(
        "SFT checkpoint",
        &sft_path,
        s,
        n,
        &target.join("sft.safetensors"),
        |p| SftPlanner::load(p).map(|_| ()).map_err(|e| e.to_string()),
    );
    let s = structural_variants(
        &rl,
        "residual_policy",
        deltaplan_learn::refine::CHECKPOINT_VERSION,
    );
    fuzz_format(
        "RL checkpoint",
        &rl,
        s,
        n,
        &target.join("rl.safetensors"),
        |p| {
            load_policy(p, &sft)
                .map(|_| ())
                .and_then(|_| Refiner::resume(p, &sft).map(|_| ()))
                .map_err(|e| e.to_string())
        },
    );
    std::fs::remove_dir_all(d).ok();
}

#[test]
fn damaged_files_are_refused_by_name_without_panics() {
    fuzz_all(3000);
}

#[test]
#[ignore = "long: DELTAPLAN_FUZZ_INPUTS=N"]
fn fuzz_long() {
    let n = std::env::var("DELTAPLAN_FUZZ_INPUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    fuzz_all(n);
}
