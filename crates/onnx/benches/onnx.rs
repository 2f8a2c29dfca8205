//! The ONNX copy of the built-in MLP planner (default architecture 128-256-256-128 -> tanh ->
//! 128-20) run by tract, against the native forward, at batch 64 and 1024; and end-to-end
//! refinement steps per second with the ONNX planner against the native one (default
//! refinement shape: 128 worlds x 128 steps per iteration, updates included).
//!
//! Median over many calls after warm-up, best of 15 rounds (as `deltaplan-learn`'s `ppo`
//! bench); threads = rayon's global pool (RAYON_NUM_THREADS). Run:
//! `RAYON_NUM_THREADS=1 cargo bench -p deltaplan-onnx`. With `DELTAPLAN_PYTHON` naming an
//! interpreter that has onnxruntime (`pip install -r python/requirements-onnx.txt`), the same
//! model is also timed by onnxruntime at the same thread count (`python/onnx_bench.py`).

use std::hint::black_box;
use std::time::Instant;

use deltaplan_learn::refine::{RefineConfig, Refiner};
use deltaplan_learn::scenarios::TrainScenarios;
use deltaplan_learn::sft::{SftArch, SftPlanner, SftWorkspace};
use deltaplan_learn::FrozenPlanner;
use deltaplan_onnx::{export_sft, OnnxPlanner, OnnxWorkspace};
use deltaplan_sim::{SimConfig, OBS_DIM};
use rand_distr::{Distribution, StandardNormal};

/// Median microseconds of `iters` calls, best of `ROUNDS` rounds, after `warmup` calls.
fn time(warmup: usize, iters: usize, mut f: impl FnMut()) -> f64 {
    const ROUNDS: usize = 15;
    for _ in 0..warmup {
        f();
    }
    (0..ROUNDS)
        .map(|_| {
            let mut t: Vec<f64> = (0..iters)
                .map(|_| {
                    let start = Instant::now();
                    f();
                    start.elapsed().as_secs_f64() * 1e6
                })
                .collect();
            t.sort_by(f64::total_cmp);
            t[iters / 2]
        })
        .fold(f64::INFINITY, f64::min)
}

/// The default SFT architecture with random weights and unit statistics.
fn default_planner() -> SftPlanner {
    let arch = SftArch {
        obs_dim: OBS_DIM,
        hidden: vec![256, 256],
        z_dim: 128,
        head_hidden: vec![128],
        horizon: 10,
        waypoint_dt: 0.2,
    };
    SftPlanner::new(arch, 1).expect("a valid architecture")
}

/// Environment steps per second over `iters` refinement iterations after one warm-up.
fn refine_steps_per_second<P: FrozenPlanner>(planner: &P, iters: usize) -> f64 {
    let cfg = RefineConfig {
        iterations: iters + 1,
        ..Default::default()
    };
    let steps = (cfg.num_envs * cfg.rollout_steps * iters) as f64;
    let mut r = Refiner::new(
        cfg,
        SimConfig::default(),
        TrainScenarios::default(),
        planner,
        1,
    )
    .expect("refiner");
    r.iterate().expect("warm-up iteration");
    let start = Instant::now();
    for _ in 0..iters {
        r.iterate().expect("iteration");
    }
    steps / start.elapsed().as_secs_f64()
}

/// onnxruntime's times for the same file, when `DELTAPLAN_PYTHON` can run it.
fn onnxruntime_rows(model: &std::path::Path, threads: usize) {
    let Some(python) = std::env::var_os("DELTAPLAN_PYTHON") else {
        println!("\n(onnxruntime not timed: set DELTAPLAN_PYTHON to a python with onnxruntime)");
        return;
    };
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../python/onnx_bench.py");
    let out = std::process::Command::new(python)
        .arg(script)
        .arg(model)
        .arg(threads.to_string())
        .output()
        .expect("run python/onnx_bench.py");
    println!("\n# onnxruntime on the same file, {threads} threads (median us per call)");
    print!("{}", String::from_utf8_lossy(&out.stdout));
    if !out.status.success() {
        println!(
            "onnxruntime failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn main() {
    let threads = rayon::current_num_threads();
    let sft = default_planner();
    let dir = std::env::temp_dir().join(format!("deltaplan-onnx-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("sft.onnx");
    std::fs::write(&path, export_sft(&sft).expect("export")).expect("write");
    let onnx = OnnxPlanner::load(&path, &SimConfig::default()).expect("load");
    let mut rng = deltaplan_stdx::seed::rng(3, 0);
    println!("# ONNX planner vs native forward, {threads} threads (median us per call)");
    println!("| batch | native | tract (ONNX copy) | tract / native |");
    println!("|---:|---:|---:|---:|");
    for (batch, iters) in [(64usize, 400usize), (1024, 40)] {
        let obs: Vec<f32> = (0..batch * OBS_DIM)
            .map(|_| StandardNormal.sample(&mut rng))
            .collect();
        let (mut z, mut wp) = (vec![0.0; batch * 128], vec![0.0; batch * 20]);
        let mut sws = SftWorkspace::new();
        let native = time(iters / 4, iters, || {
            sft.forward(black_box(&obs), &mut sws, &mut z, &mut wp)
                .expect("forward");
        });
        let mut ows = OnnxWorkspace::default();
        let tract = time(iters / 4, iters, || {
            onnx.plan_batch(black_box(&obs), &mut ows, &mut wp, &mut z)
                .expect("plan");
        });
        println!(
            "| {batch} | {native:.1} | {tract:.1} | {:.2}x |",
            tract / native
        );
    }
    onnxruntime_rows(&path, threads);
    let iters = 3;
    let native = refine_steps_per_second(&sft, iters);
    let tract = refine_steps_per_second(&onnx, iters);
    println!(
        "\n# End-to-end refinement (128 worlds x 128 steps, updates included), {threads} threads"
    );
    println!("| frozen planner | env steps/s | vs native |");
    println!("|---|---:|---:|");
    println!("| native SFT | {native:.0} | 100% |");
    println!(
        "| ONNX copy (tract) | {tract:.0} | {:.0}% |",
        100.0 * tract / native
    );
    let _ = std::fs::remove_dir_all(&dir);
}
