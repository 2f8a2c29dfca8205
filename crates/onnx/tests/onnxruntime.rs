//! onnxruntime (PyPI) reproduces deltaplan's waypoints within 1e-5 m on 1,000 recorded
//! observations, for the exported built-in SFT planner and its exported refinement, and for the
//! PyTorch BEV-CNN planner (the fixture, as tract runs it) and its exported refinement.
//!
//! Part of the README's test command: the test installs `python/requirements-onnx.txt` into a
//! venv under cargo's target directory the first time (about 30 s and 60 MB from PyPI), then
//! runs `python/onnx_parity.py`. `DELTAPLAN_PYTHON=/path/to/python` uses an interpreter that
//! already has onnxruntime and numpy; `DELTAPLAN_SKIP_ONNXRUNTIME=1` skips it (offline).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use deltaplan_learn::refine::ResidualPlanner;
use deltaplan_learn::sft::SftWorkspace;
use deltaplan_learn::FrozenPlanner;
use deltaplan_onnx::{export_refined, export_sft, Frozen, OnnxPlanner, OnnxWorkspace, Residual};
use deltaplan_sim::{SimConfig, OBS_DIM};

/// A parity case: name, model bytes, deltaplan's observation rows and its waypoints.
type Case<'a> = (&'static str, Vec<u8>, &'a [f32], &'a [f32]);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// An interpreter with onnxruntime and numpy: `DELTAPLAN_PYTHON`, or a venv made on first use.
fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("DELTAPLAN_PYTHON") {
        return p.into();
    }
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("onnxruntime-venv");
    let py = venv.join("bin").join("python");
    let ready = || {
        Command::new(&py)
            .args(["-c", "import onnxruntime, numpy"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if !ready() {
        let made = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .is_ok_and(|s| s.success());
        let installed = made
            && Command::new(&py)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    "-r",
                ])
                .arg(repo_root().join("python/requirements-onnx.txt"))
                .status()
                .is_ok_and(|s| s.success());
        assert!(
            installed && ready(),
            "cannot install onnxruntime and numpy into {} (python3 -m venv + pip, from PyPI): \
             set DELTAPLAN_PYTHON to a python that has them, or DELTAPLAN_SKIP_ONNXRUNTIME=1 \
             to skip this test offline",
            venv.display()
        );
    }
    py
}

#[test]
fn onnxruntime_reproduces_deltaplans_waypoints_on_1000_recorded_observations() {
    if std::env::var_os("DELTAPLAN_SKIP_ONNXRUNTIME").is_some() {
        eprintln!("skipped: DELTAPLAN_SKIP_ONNXRUNTIME is set");
        return;
    }
    let ds = recorded(25, 40);
    let n = 1000;
    let obs = observations(&ds, n);
    let sft = sft_planner(&ds, OBS_DIM, 10, 1);
    let ac = residual(&sft);
    let ramp = 0.8;
    let mut sft_wp = vec![0.0; n * 20];
    sft.forward(
        &obs,
        &mut SftWorkspace::new(),
        &mut vec![0.0; n * sft.z_dim()],
        &mut sft_wp,
    )
    .unwrap();
    let mut rl_wp = vec![0.0; n * 20];
    ResidualPlanner::new(&sft, &ac, ramp)
        .plan(&obs, &mut rl_wp)
        .unwrap();
    assert!(
        max_abs_diff(&sft_wp, &rl_wp) > 0.1,
        "the residual must move the plans"
    );

    // The PyTorch BEV-CNN planner (raster and vector inputs) and its refined export.
    let bev = OnnxPlanner::load(&fixture(), &SimConfig::default()).unwrap();
    let bev_obs = raster_observations(bev.bev_observation().unwrap(), 25, 40);
    let mut bev_wp = vec![0.0; n * 20];
    bev.plan_batch(
        &bev_obs,
        &mut OnnxWorkspace::default(),
        &mut bev_wp,
        &mut vec![0.0; n * bev.embedding_dim()],
    )
    .unwrap();
    let bev_ac = residual(&bev);
    let mut bev_rl_wp = vec![0.0; n * 20];
    ResidualPlanner::new(&bev, &bev_ac, ramp)
        .plan(&bev_obs, &mut bev_rl_wp)
        .unwrap();
    assert!(max_abs_diff(&bev_wp, &bev_rl_wp) > 0.1);

    let dir = tmpdir("onnxruntime");
    let refined = export_refined(Frozen::Sft(&sft), Residual { ac: &ac, ramp }).unwrap();
    let bev_refined = export_refined(Frozen::Onnx(&bev), Residual { ac: &bev_ac, ramp }).unwrap();
    let cases: [Case; 4] = [
        ("sft", export_sft(&sft).unwrap(), &obs, &sft_wp),
        ("rl", refined, &obs, &rl_wp),
        ("bev", std::fs::read(fixture()).unwrap(), &bev_obs, &bev_wp),
        ("bev_rl", bev_refined, &bev_obs, &bev_rl_wp),
    ];
    for (name, model, rows, waypoints) in &cases {
        write(&dir, &format!("{name}.onnx"), model);
        write(&dir, &format!("{name}_obs.f32"), &f32_bytes(rows));
        write(
            &dir,
            &format!("{name}_waypoints.f32"),
            &f32_bytes(waypoints),
        );
    }

    let out = Command::new(python())
        .arg(repo_root().join("python/onnx_parity.py"))
        .arg(&dir)
        .args(cases.iter().map(|c| c.0))
        .output()
        .expect("run python/onnx_parity.py");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(out.status.success(), "onnxruntime parity failed:\n{text}");
    for (name, ..) in &cases {
        assert!(
            text.contains(&format!("{name}: 1000 observations")),
            "{name}: {text}"
        );
    }
}
