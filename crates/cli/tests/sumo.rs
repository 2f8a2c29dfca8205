//! The CLI in SUMO with real SUMO processes: `deltaplan evaluate --world sumo` (one record per
//! episode, `eval.per_family` x 5, and a table per network; `--network` on maps of real
//! places); refinement in SUMO resuming bit for bit; and the whole pipeline in SUMO
//! (`train_scenarios.world = "sumo"`: SUMO's driver model records, behaviour cloning,
//! refinement, evaluation, report), resuming after kills to the same bytes, with a planner
//! cloned from SUMO's driver that drives better than one cloned from shuffled labels. Skips
//! with a printed reason without SUMO, unless `DELTAPLAN_REQUIRE_SUMO=1`.

mod common;

use std::path::Path;

use common::{bin, text, tmp};
use deltaplan_sim::EpisodeStats;

/// Whether SUMO is here; without it the test skips, saying why (fails under CI's flag).
fn sumo_or_skip(test: &str) -> bool {
    match deltaplan_sumo::locate::SumoBinaries::locate_default() {
        Ok(_) => true,
        Err(e) if std::env::var("DELTAPLAN_REQUIRE_SUMO").as_deref() == Ok("1") => {
            panic!("DELTAPLAN_REQUIRE_SUMO=1 but {e}")
        }
        Err(e) => {
            eprintln!("SKIPPED {test}: {e}");
            false
        }
    }
}

#[test]
fn evaluate_world_sumo_writes_one_record_per_episode() {
    if !sumo_or_skip("evaluate_world_sumo_writes_one_record_per_episode") {
        return;
    }
    let out = tmp("sumo", "evaluate");
    let o = bin()
        .args(["evaluate", "--world", "sumo", "--policy", "expert", "--out"])
        .arg(&out)
        .args(["--set", "eval.per_family=1"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let path = out.join("eval/sumo_eval_expert.json");
    let records: Vec<EpisodeStats> =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(records.len(), 5);
    for r in &records {
        assert!(r.steps > 0 && r.route_length > 200.0, "{r:?}");
    }
    // Seeds from the evaluation split, one per episode.
    assert!(records
        .iter()
        .all(|r| deltaplan_sim::Split::Eval.contains(r.seed)));
    // The table: the two held-out networks (worlds alternate: 3 and 2 episodes) and all.
    let table = std::fs::read_to_string(path.with_extension("md")).unwrap();
    for row in [
        "| spider-1000001 | 3 |",
        "| grid-1000002 | 2 |",
        "| all | 5 |",
    ] {
        assert!(table.contains(row), "{row} in {table}");
    }
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn evaluate_on_maps_of_real_places_and_refuse_bad_network_names() {
    if !sumo_or_skip("evaluate_on_maps_of_real_places") {
        return;
    }
    let out = tmp("sumo", "maps");
    let run = |extra: &[&str]| {
        bin()
            .args(["evaluate", "--policy", "expert", "--out"])
            .arg(&out)
            .args(["--set", "eval.per_family=1"])
            .args(extra)
            .output()
            .unwrap()
    };
    let o = run(&["--world", "sumo", "--network", "carla:Town01"]);
    if !o.status.success() && text(&o).contains("pip install --no-deps py123d") {
        assert!(
            std::env::var("DELTAPLAN_REQUIRE_SUMO").as_deref() != Ok("1"),
            "{}",
            text(&o)
        );
        eprintln!("SKIPPED evaluate_on_maps_of_real_places: py123d is not installed");
        return;
    }
    assert!(o.status.success(), "{}", text(&o));
    let table = std::fs::read_to_string(out.join("eval/sumo_eval_expert_town01.md")).unwrap();
    assert!(table.contains("| town01 | 5 |"), "{table}");
    let bad = run(&["--world", "sumo", "--network", "osm:berlin"]);
    assert!(!bad.status.success());
    assert!(text(&bad).contains("`resco:NAME`"), "{}", text(&bad));
    let builtin = run(&["--network", "carla:Town01"]);
    assert!(!builtin.status.success());
    assert!(
        text(&builtin).contains("--network needs --world sumo"),
        "{}",
        text(&builtin)
    );
    let _ = std::fs::remove_dir_all(&out);
}

/// The lines of a metrics file without their timings (which no two runs share).
fn metrics_without_timings(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            let m = v.as_object_mut().unwrap();
            m.remove("seconds");
            m.remove("steps_per_second");
            v
        })
        .collect()
}

#[test]
fn refine_in_sumo_resumes_bit_for_bit_after_ctrl_c_and_is_evaluated_there() {
    if !sumo_or_skip("refine_in_sumo_resumes_bit_for_bit") {
        return;
    }
    // Another run's built-in SFT planner, small.
    let sft_run = tmp("sumo", "refine-sft");
    for stage in ["record", "train-sft"] {
        let o = bin()
            .arg(stage)
            .arg("--out")
            .arg(&sft_run)
            .args(["--set", "demos.steps=200", "--set", "sft.epochs=2"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
    }
    let planner = sft_run.join("sft.safetensors");
    let settings = [
        "--set",
        "train_scenarios.world=\"sumo\"",
        "--set",
        "refine.num_envs=4",
        "--set",
        "refine.rollout_steps=32",
        "--set",
        "refine.iterations=8",
        "--set",
        "checkpoint_every=1",
    ];
    let refine = |out: &std::path::Path| {
        let mut c = bin();
        c.arg("refine")
            .arg("--out")
            .arg(out)
            .arg("--planner")
            .arg(&planner)
            .args(settings);
        c
    };
    let (a, b) = (tmp("sumo", "refine-a"), tmp("sumo", "refine-b"));
    let o = refine(&a).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));

    // The same refinement stopped with Ctrl-C after two iterations, then rerun.
    let mut child = refine(&b)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let metrics = b.join("metrics.jsonl");
    let start = std::time::Instant::now();
    while std::fs::read_to_string(&metrics).map_or(0, |t| t.lines().count()) < 2 {
        assert!(
            start.elapsed().as_secs() < 120,
            "refinement made no progress"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let status = std::process::Command::new("kill")
        .arg("-INT")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(child.wait().unwrap().code(), Some(130), "{}", b.display());
    let stopped = std::fs::read_to_string(&metrics).unwrap().lines().count();
    assert!(stopped < 8, "interrupted before the end");
    let o = refine(&b).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    // The SUMO worlds were rebuilt by replay: the same policy, bit for bit, and the same
    // training statistics for every iteration.
    assert_eq!(
        std::fs::read(a.join("rl.safetensors")).unwrap(),
        std::fs::read(b.join("rl.safetensors")).unwrap()
    );
    assert_eq!(
        metrics_without_timings(&a.join("metrics.jsonl")),
        metrics_without_timings(&metrics)
    );
    let lines = metrics_without_timings(&metrics);
    assert!(
        lines.iter().any(|l| l["episodes"].as_u64() > Some(0)),
        "episodes ended in SUMO"
    );

    // The refined planner drives SUMO's held-out networks.
    let o = bin()
        .args(["evaluate", "--world", "sumo", "--policy", "rl", "--out"])
        .arg(&b)
        .arg("--planner")
        .arg(&planner)
        .args(settings)
        .args(["--set", "eval.per_family=1"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let records: Vec<EpisodeStats> =
        serde_json::from_str(&std::fs::read_to_string(b.join("eval/sumo_eval_rl.json")).unwrap())
            .unwrap();
    assert_eq!(records.len(), 5);

    for d in [sft_run, a, b] {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// The settings of a whole small run in SUMO.
const SUMO_RUN: [&str; 16] = [
    "--set",
    "train_scenarios.world=\"sumo\"",
    "--set",
    "demos.n_envs=4",
    "--set",
    "demos.steps=300",
    "--set",
    "sft.epochs=3",
    "--set",
    "refine.num_envs=4",
    "--set",
    "refine.rollout_steps=32",
    "--set",
    "refine.iterations=4",
    "--set",
    "eval.per_family=1",
];

/// The files a run writes whose bytes are its results (not its timings).
fn result_files(out: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut names: Vec<String> = ["demos.safetensors", "sft.safetensors", "rl.safetensors"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut evals: Vec<String> = std::fs::read_dir(out.join("eval"))
        .unwrap()
        .flatten()
        .map(|e| format!("eval/{}", e.file_name().to_string_lossy()))
        .collect();
    evals.sort();
    names.extend(evals);
    names
        .into_iter()
        .map(|n| {
            let bytes = std::fs::read(out.join(&n)).unwrap();
            (n, bytes)
        })
        .collect()
}

#[test]
fn a_whole_run_in_sumo_reports_and_resumes_after_kills_to_the_same_bytes() {
    if !sumo_or_skip("a_whole_run_in_sumo") {
        return;
    }
    let run = |out: &std::path::Path, fault: Option<&str>| {
        let mut c = bin();
        c.arg("run").arg("--out").arg(out).args(SUMO_RUN);
        if let Some(f) = fault {
            c.env("DELTAPLAN_FAULT", f);
        }
        c.output().unwrap()
    };
    let (a, b) = (tmp("sumo", "run-a"), tmp("sumo", "run-b"));
    let o = run(&a, None);
    assert!(o.status.success(), "{}", text(&o));

    // SUMO's driver model recorded the demonstrations: a SUMO recording, labels in hindsight.
    let ds = deltaplan_learn::Dataset::load(&a).unwrap();
    assert_eq!(ds.config.scenarios.world, deltaplan_learn::TrainWorld::Sumo);
    assert!(
        ds.n_samples() > 500 && ds.n_samples() <= 4 * 300,
        "{}",
        ds.n_samples()
    );
    assert_eq!(ds.executed, ds.actions);
    assert!(ds
        .episodes
        .iter()
        .all(|e| deltaplan_sim::Split::Train.contains(e.seed)));

    // The report is SUMO's: its expert is SUMO's driver model, its splits the held-out
    // networks' episodes, with a table per network and policy.
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(a.join("report.json")).unwrap()).unwrap();
    for split in ["eval", "hard"] {
        for policy in ["expert", "sft", "rl"] {
            let p = &report["splits"][split][policy];
            assert_eq!(p["episodes"], 5, "{split} {policy}");
            for metric in ["driving_score", "failure_rate", "nuplan_score"] {
                assert!(p[metric].as_f64().is_some(), "{split} {policy} {metric}");
            }
        }
        let driver: Vec<EpisodeStats> = serde_json::from_str(
            &std::fs::read_to_string(a.join(format!("eval/sumo_{split}_sumo-driver.json")))
                .unwrap(),
        )
        .unwrap();
        let expert = report["splits"][split]["expert"]["driving_score"]
            .as_f64()
            .unwrap();
        let mean = driver
            .iter()
            .map(|e| f64::from(e.driving_score()))
            .sum::<f64>()
            / driver.len() as f64;
        assert!((mean - expert).abs() < 1e-3, "{split}: {mean} vs {expert}");
    }
    let md = std::fs::read_to_string(a.join("report.md")).unwrap();
    for needle in [
        "expert = SUMO's own driver model",
        "### SUMO's driver model, eval split, the held-out generated networks",
        "### sft, hard split, the held-out generated networks",
        "| spider-1000001 | 3 |",
    ] {
        assert!(md.contains(needle), "{needle} in the report");
    }

    // The same run killed after its demonstrations, then inside the evaluations (a file
    // written, its key not yet), then resumed: every stage continues from what is on disk,
    // and every result is the uninterrupted run's, byte for byte.
    for fault in [
        "write-done:demos.safetensors",
        "write-done:sumo_hard_sft.json",
    ] {
        let o = run(&b, Some(fault));
        assert!(!o.status.success(), "{fault}: {}", text(&o));
        assert!(text(&o).contains("fault injected"), "{}", text(&o));
    }
    let o = run(&b, None);
    assert!(o.status.success(), "{}", text(&o));
    let (ra, rb) = (result_files(&a), result_files(&b));
    assert_eq!(
        ra.iter().map(|(n, _)| n).collect::<Vec<_>>(),
        rb.iter().map(|(n, _)| n).collect::<Vec<_>>()
    );
    for ((name, x), (_, y)) in ra.iter().zip(&rb) {
        assert!(x == y, "{name} differs after the kills");
    }
    for d in [a, b] {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn what_a_run_in_sumo_cannot_do_is_refused_before_any_stage_with_the_way_round() {
    if !sumo_or_skip("what_a_run_in_sumo_cannot_do") {
        return;
    }
    for (set, says) in [
        ("demos.bev={}", "record without demos.bev"),
        ("refine.select_every=5", "refine.select_every = 0"),
        (
            "sim.controller.waypoint_dt=0.25",
            "must then be a multiple of sim.dt",
        ),
    ] {
        let out = tmp("sumo", "refused");
        let o = bin()
            .arg("run")
            .arg("--out")
            .arg(&out)
            .args(&SUMO_RUN[..2])
            .args(["--set", set])
            .output()
            .unwrap();
        assert!(!o.status.success(), "{set}");
        assert!(text(&o).contains(says), "{set}: {}", text(&o));
        assert!(!out.exists(), "{set}: a stage wrote files");
    }
    let o = bin()
        .args(["evaluate", "--policy", "sumo-driver", "--out"])
        .arg(tmp("sumo", "refused-driver"))
        .output()
        .unwrap();
    assert!(
        text(&o).contains("--policy sumo-driver needs --world sumo"),
        "{}",
        text(&o)
    );
}

#[test]
fn a_planner_cloned_from_sumos_driver_drives_better_than_one_cloned_from_shuffled_labels() {
    if !sumo_or_skip("a_planner_cloned_from_sumos_driver") {
        return;
    }
    use deltaplan::sumo_eval::evaluate_policy;
    use deltaplan_eval::{Driver, Metric, Planner, PlannerError, Policy, Summary};
    use deltaplan_learn::sft::{train_sft, SftWorkspace};
    use deltaplan_learn::FrozenPlanner;
    let sets: Vec<String> = [
        "train_scenarios.world=\"sumo\"",
        "demos.n_envs=4",
        "demos.steps=3000",
        "sft.epochs=20",
        "eval.per_family=6",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let cfg = deltaplan::config::Config::load(None, &sets, Some(3)).unwrap();
    let out = tmp("sumo", "cloned");
    let ds = deltaplan::sumo_world::record_demonstrations(&cfg.recording(), &out, &|| {}).unwrap();
    // The same observations with every label moved to another sample: a planner that learns
    // from these learns the average plan, whatever it sees.
    let mut shuffled = ds.clone();
    let a = ds.action_dim();
    let mut order: Vec<usize> = (0..ds.n_samples()).collect();
    deltaplan_stdx::seed::shuffle(&mut order, &mut deltaplan_stdx::seed::rng(7, 0));
    for (k, &from) in order.iter().enumerate() {
        shuffled.actions[k * a..(k + 1) * a].copy_from_slice(ds.action_row(from));
    }
    let drive = |ds: &deltaplan_learn::Dataset| {
        let (planner, _) = train_sft(&cfg.sft, ds, cfg.stage_seed(), |_| {}).unwrap();
        let (mut ws, mut z) = (SftWorkspace::new(), Vec::new());
        let mut plan = |obs: &[f32], plans: &mut [f32]| {
            z.resize(
                obs.len() / deltaplan_sim::OBS_DIM * planner.embedding_dim(),
                0.0,
            );
            planner
                .plan_batch(obs, &mut ws, plans, &mut z)
                .map_err(PlannerError::new)
        };
        let planner: &mut dyn Planner = &mut plan;
        let path = evaluate_policy(
            &cfg,
            &out,
            Policy::Sft,
            &mut Driver::Planner(planner),
            deltaplan_sim::Split::Eval,
            &[],
        )
        .unwrap();
        let episodes: Vec<EpisodeStats> =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        deltaplan_eval::summarize(&episodes).overall
    };
    let (cloned, averaged) = (drive(&ds), drive(&shuffled));
    let show = |s: &Summary| {
        format!(
            "route completion {:.1}, failures {:.0}%, driving score {:.1}",
            s[Metric::RouteCompletion].mean,
            100.0 * s[Metric::FailureRate].mean,
            s[Metric::DrivingScore].mean
        )
    };
    eprintln!(
        "SFT on SUMO's labels: {}; on shuffled labels: {} ({} samples)",
        show(&cloned),
        show(&averaged),
        ds.n_samples()
    );
    assert!(
        cloned[Metric::RouteCompletion].mean > averaged[Metric::RouteCompletion].mean + 15.0,
        "labels that say what SUMO's driver did must teach more than shuffled ones"
    );
    assert!(cloned[Metric::FailureRate].mean < averaged[Metric::FailureRate].mean);
    let _ = std::fs::remove_dir_all(out);
}

/// `configs/sumo.toml` (the README's one command for the whole pipeline in SUMO) sets SUMO's
/// world and the measured sizes and settings, and nothing else: every other printed line is the
/// default's.
#[test]
fn the_shipped_sumo_config_changes_only_the_measured_fields() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/sumo.toml");
    let default = bin().arg("config").output().expect("run deltaplan config");
    let sumo = bin()
        .args(["config", "--config"])
        .arg(&file)
        .output()
        .expect("run deltaplan config --config configs/sumo.toml");
    assert!(sumo.status.success(), "{}", text(&sumo));
    let (default, sumo) = (text(&default), text(&sumo));
    let changed: Vec<(&str, &str)> = default
        .lines()
        .zip(sumo.lines())
        .filter(|(a, b)| a != b)
        .collect();
    let want = [
        ("comfort_penalty = 1.0", "comfort_penalty = 0.0"),
        ("world = \"builtin\"", "world = \"sumo\""),
        ("n_envs = 64", "n_envs = 16"),
        ("steps = 1500", "steps = 4000"),
        ("num_envs = 128", "num_envs = 16"),
        ("iterations = 400", "iterations = 900"),
        ("expert_coef = 20.0", "expert_coef = 0.0"),
        ("per_family = 200", "per_family = 20"),
    ];
    assert_eq!(default.lines().count(), sumo.lines().count());
    assert_eq!(changed, want, "configs/sumo.toml:\n{sumo}");
}
