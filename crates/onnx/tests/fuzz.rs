//! Fuzzing of the ONNX planner files deltaplan reads: damaged variants of an exported model
//! (spec in its metadata), of the PyTorch BEV-CNN fixture (model bytes) and of its sidecar
//! spec (TOML text) are loaded by `OnnxPlanner::load`: no panic (tract's own included), bounded
//! time per input, and every refusal an error naming the file.
//!
//! The spec's own parser (`PlannerSpec::parse`) is fuzzed on its text as well, without a model
//! to build, so it gets many more inputs per second.
//!
//! The suite runs a short version; `DELTAPLAN_FUZZ_INPUTS=N cargo test --release -p
//! deltaplan-onnx --test fuzz -- --ignored` runs N inputs per file (about 4 ms each for the
//! model files, most of it tract's graph analysis); `DELTAPLAN_FUZZ_ONLY=NAME` keeps the files
//! whose name contains NAME (`exported`, `BEV`, `sidecar`).

mod common;

use std::path::Path;

use common::*;
use deltaplan_onnx::{export_sft, OnnxPlanner, PlannerSpec};
use deltaplan_sim::{SimConfig, OBS_DIM};
use deltaplan_stdx::fuzz::fuzz;

/// Feeds `n` mutants of `seed` (written to `target`, the file `load_path` reads) to
/// `OnnxPlanner::load`, checking the stats.
fn fuzz_file(name: &str, seed: Vec<u8>, n: u64, target: &Path, load_path: &Path) {
    let only = std::env::var("DELTAPLAN_FUZZ_ONLY").unwrap_or_default();
    if !name.contains(&only) {
        return;
    }
    let shown = |p: &Path| p.display().to_string();
    let (model, sidecar) = (shown(load_path), shown(&load_path.with_extension("toml")));
    let named = |m: &str| m.contains(&model) || m.contains(&sidecar);
    let parse = |bytes: &[u8]| {
        std::fs::write(target, bytes).unwrap();
        OnnxPlanner::load(load_path, &SimConfig::default())
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    let stats = fuzz(&[seed], n, 11, parse, named);
    stats.print_and_check(name);
}

fn fuzz_all(n: u64) {
    let d = tmpdir("fuzz");
    // An exported built-in planner: the spec sits in the model's metadata.
    let ds = recorded(2, 20);
    let exported = export_sft(&sft_planner(&ds, OBS_DIM, 10, 1)).unwrap();
    let sft = d.join("sft.onnx");
    fuzz_file("exported SFT model", exported, n, &sft, &sft);
    // The PyTorch model, with its sidecar spec beside it; then the sidecar itself.
    let bev = d.join("bev.onnx");
    std::fs::copy(fixture().with_extension("toml"), bev.with_extension("toml")).unwrap();
    fuzz_file(
        "PyTorch BEV-CNN model",
        std::fs::read(fixture()).unwrap(),
        n,
        &bev,
        &bev,
    );
    std::fs::copy(fixture(), &bev).unwrap();
    fuzz_file(
        "sidecar spec",
        std::fs::read(fixture().with_extension("toml")).unwrap(),
        n,
        &bev.with_extension("toml"),
        &bev,
    );
    std::fs::remove_dir_all(d).ok();
}

/// `n` mutants of the sidecar spec's text to `PlannerSpec::parse`: refusals say what is wrong
/// (the caller adds the file's name, which the file suite above checks).
fn fuzz_spec_text(n: u64) {
    let seed = std::fs::read(fixture().with_extension("toml")).unwrap();
    let parse = |bytes: &[u8]| {
        let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))?;
        PlannerSpec::parse(text).map(|_| ())
    };
    fuzz(&[seed], n, 12, parse, |m: &str| !m.trim().is_empty()).print_and_check("spec text");
}

fn inputs_asked(default: u64) -> u64 {
    std::env::var("DELTAPLAN_FUZZ_INPUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn damaged_planner_files_are_refused_by_name_without_panics() {
    fuzz_all(300);
}

#[test]
fn damaged_spec_texts_are_refused_without_panics() {
    fuzz_spec_text(20_000);
}

#[test]
#[ignore = "long: DELTAPLAN_FUZZ_INPUTS=N"]
fn fuzz_spec_text_long() {
    fuzz_spec_text(inputs_asked(1_000_000));
}

#[test]
#[ignore = "long: DELTAPLAN_FUZZ_INPUTS=N"]
fn fuzz_long() {
    fuzz_all(inputs_asked(100_000));
}
