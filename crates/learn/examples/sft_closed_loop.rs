//! Closed-loop evaluation of the SFT planner next to the privileged expert.
//!
//! `cargo run --release -p deltaplan-learn --example sft_closed_loop -- [DATA_DIR] [CKPT] [PER_FAMILY] [TRAIN_JSON]`
//!
//! Records the default demonstrations into DATA_DIR (default `runs/demos`) unless a dataset is
//! already there, trains the default SFT planner into CKPT (default `runs/sft.safetensors`)
//! unless it exists, then drives the eval-split suite (PER_FAMILY scenarios per family, default
//! 20) with the planner and with the expert, printing per-family driving score, route
//! completion and collision / off-road fractions. Wall times of recording and training are
//! printed when they run. TRAIN_JSON overrides the training config, e.g. `'{"epochs": 60}'`.

use std::path::PathBuf;
use std::time::Instant;

use deltaplan_learn::dataset::{
    dataset_path, record_demonstrations, Dataset, DemoConfig, Recording,
};
use deltaplan_learn::scenarios::TrainScenarios;
use deltaplan_learn::sft::{train_sft, SftPlanner, SftTrainConfig, SftWorkspace};
use deltaplan_sim::{
    BatchEnv, Difficulty, EndReason, EpisodeStats, Family, SimConfig, Split, StepBuffers, OBS_DIM,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let data_dir = PathBuf::from(args.first().map_or("runs/demos", String::as_str));
    let ckpt = PathBuf::from(args.get(1).map_or("runs/sft.safetensors", String::as_str));
    let per_family: usize = args.get(2).map_or(Ok(20), |s| s.parse())?;

    let ds = if dataset_path(&data_dir).exists() {
        Dataset::load(&data_dir)?
    } else {
        let rec = Recording {
            sim: SimConfig::default(),
            seed: 0,
            scenarios: TrainScenarios::default(),
            demos: DemoConfig::default(),
        };
        let cfg = &rec.demos;
        let t = Instant::now();
        let ds = record_demonstrations(&rec, |_| {})?;
        let rec = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let path = ds.save(&data_dir)?;
        println!(
            "recorded {} samples ({} episodes, {} envs x {} steps) in {rec:.1} s; saved {} in {:.1} s",
            ds.n_samples(),
            ds.n_episodes(),
            cfg.n_envs,
            cfg.steps,
            path.display(),
            t.elapsed().as_secs_f64()
        );
        ds
    };
    let planner = if ckpt.exists() {
        SftPlanner::load(&ckpt)?
    } else {
        let cfg: SftTrainConfig = match args.get(3) {
            Some(json) => serde_json::from_str(json)?,
            None => SftTrainConfig::default(),
        };
        let t = Instant::now();
        let (p, report) = train_sft(&cfg, &ds, 0, |e| {
            println!(
                "epoch {:3}  train {:.4}  val {:.4}  ADE {:.3} m  FDE {:.3} m  lr {:.2e}  ({:.1} s)",
                e.epoch,
                e.train_loss,
                e.val_loss,
                e.val_ade,
                e.val_fde,
                e.lr,
                t.elapsed().as_secs_f64()
            );
        })?;
        println!(
            "trained in {:.1} s: best epoch {} ADE {:.3} m FDE {:.3} m (untrained {:.3}/{:.3}, mean-waypoint baseline {:.3}/{:.3}); {} train / {} val samples",
            t.elapsed().as_secs_f64(),
            report.best_epoch,
            report.best_val_ade,
            report.best_val_fde,
            report.initial_val_ade,
            report.initial_val_fde,
            report.mean_baseline_val_ade,
            report.mean_baseline_val_fde,
            report.train_samples,
            report.val_samples
        );
        p.save(&ckpt)?;
        p
    };
    let sim = SimConfig::default();
    planner.check_compatible(&sim)?;
    println!(
        "planner {} ({} params)",
        &planner.weights_hash()[..16],
        planner.num_params()
    );

    let specs = Split::Eval.suite(&Family::ALL, per_family, Difficulty::default());
    let t = Instant::now();
    let sft = run(&specs, sim, Some(&planner))?;
    let t_sft = t.elapsed().as_secs_f64();
    let expert = run(&specs, sim, None)?;
    println!(
        "\neval split, {per_family} scenarios per family (SFT rollout {t_sft:.1} s); fractions of episodes: done = route completed, coll = collision, offrd = ended off-road, red = ran a red light, block = blocked, tlim = time limit\n{:<13} {:>6} {:>6} {:>5} {:>5} {:>5} {:>5} {:>5} {:>5} | {:>6} {:>6} {:>5} {:>5} {:>5} {:>5} {:>5} {:>5}",
        "family", "DS", "RC", "done", "coll", "offrd", "red", "block", "tlim",
        "expDS", "expRC", "done", "coll", "offrd", "red", "block", "tlim"
    );
    let mut rows: Vec<(&str, Vec<usize>)> = Family::ALL
        .iter()
        .map(|f| {
            (
                f.name(),
                (0..specs.len())
                    .filter(|&i| specs[i].family == *f)
                    .collect(),
            )
        })
        .collect();
    rows.push(("all", (0..specs.len()).collect()));
    for (name, idx) in rows {
        let a = summary(&sft, &idx);
        let b = summary(&expert, &idx);
        let fmt = |v: [f64; 8]| {
            format!(
                "{:>6.2} {:>6.2} {:>5.2} {:>5.2} {:>5.2} {:>5.2} {:>5.2} {:>5.2}",
                v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]
            )
        };
        println!("{name:<13} {} | {}", fmt(a), fmt(b));
    }
    Ok(())
}

/// [mean DS, mean RC, then fractions of episodes ending completed / in a collision / off-road /
/// at a red light / blocked / at the time limit].
fn summary(stats: &[EpisodeStats], idx: &[usize]) -> [f64; 8] {
    let n = idx.len().max(1) as f64;
    let mean =
        |f: &dyn Fn(&EpisodeStats) -> f64| idx.iter().map(|&i| f(&stats[i])).sum::<f64>() / n;
    let frac = |f: &dyn Fn(&EpisodeStats) -> bool| mean(&|e| f64::from(u8::from(f(e))));
    [
        mean(&|e| f64::from(e.driving_score())),
        mean(&|e| f64::from(e.route_completion)),
        frac(&|e| e.end == EndReason::RouteCompleted),
        frac(&|e| e.had_collision()),
        frac(&|e| e.end == EndReason::OffRoad),
        frac(&|e| e.red_lights > 0),
        frac(&|e| e.blocked),
        frac(&|e| e.end == EndReason::TimeLimit),
    ]
}

/// Drives every spec once with the planner (or the expert when `None`).
fn run(
    specs: &[deltaplan_sim::ScenarioSpec],
    sim: SimConfig,
    planner: Option<&SftPlanner>,
) -> Result<Vec<EpisodeStats>, Box<dyn std::error::Error>> {
    let mut env = BatchEnv::fixed(sim, specs.to_vec());
    let n = env.len();
    let a = env.action_dim();
    let mut buf = StepBuffers::new(n);
    env.observe(&mut buf.obs);
    let mut actions = vec![0.0f32; n * a];
    let mut ws = SftWorkspace::new();
    let mut z = vec![0.0f32; n * planner.map_or(0, |p| p.z_dim())];
    debug_assert_eq!(buf.obs.len(), n * OBS_DIM);
    while !env.all_idle() {
        match planner {
            Some(p) => p.forward(&buf.obs, &mut ws, &mut z, &mut actions)?,
            None => env.expert_actions(&mut actions),
        }
        env.step(&actions, &mut buf);
    }
    Ok((0..n).map(|i| *env.finished(i)).collect())
}
