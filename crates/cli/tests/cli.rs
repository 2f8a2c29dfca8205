//! The command-line tool as a user runs it: a small end-to-end run, Ctrl-C and resume, and the
//! errors for a bad config field and for an output directory that holds another run.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{bin, text};

const SMALL: &[&str] = &[
    "--set",
    "demos.steps=150",
    "--set",
    "demos.n_envs=16",
    "--set",
    "sft.epochs=2",
    "--set",
    "refine.num_envs=8",
    "--set",
    "refine.rollout_steps=32",
    "--set",
    "eval.per_family=2",
    "--set",
    "eval.examples=1",
];

fn tmp(name: &str) -> PathBuf {
    common::tmp("cli", name)
}

fn run(args: &[&str], out: &Path, extra: &[&str]) -> Output {
    bin()
        .args(args)
        .arg("--out")
        .arg(out)
        .args(SMALL)
        .args(extra)
        .output()
        .expect("run deltaplan")
}

/// The CARLA Leaderboard file's average driving score and the nuPlan table's final score of
/// every split and policy are report.json's `driving_score` and `nuplan_score` / 100.
fn check_field_formats(out: &Path, report: &serde_json::Value) {
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.contains("`eval/<split>/<policy>/carla_leaderboard.json`")
            && md.contains("`eval/<split>/<policy>/nuplan_aggregator.csv`"),
        "the report says where the field's formats are"
    );
    for split in ["eval", "hard"] {
        for policy in ["expert", "sft", "rl"] {
            let dir = out.join("eval").join(split).join(policy);
            let lb: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(dir.join("carla_leaderboard.json")).unwrap(),
            )
            .unwrap();
            let want = report["splits"][split][policy]["driving_score"]
                .as_f64()
                .unwrap();
            let global = &lb["_checkpoint"]["global_record"]["scores_mean"];
            let got = global["score_composed"].as_f64().unwrap();
            assert!(
                (got - want).abs() <= 1e-6,
                "{split} {policy}: {got} vs {want}"
            );
            let first_value: f64 = lb["values"][0].as_str().unwrap().parse().unwrap();
            assert_eq!(first_value, got);
            assert_eq!(lb["_checkpoint"]["records"].as_array().unwrap().len(), 10);
            let csv = std::fs::read_to_string(dir.join("nuplan_aggregator.csv")).unwrap();
            let last = csv.lines().last().unwrap();
            assert!(last.starts_with("final_score,,final_score,10,"), "{last}");
            let score: f64 = last.rsplit(',').next().unwrap().parse().unwrap();
            let want = report["splits"][split][policy]["nuplan_score"]
                .as_f64()
                .unwrap();
            assert!(
                (100.0 * score - want).abs() <= 1e-4,
                "{split} {policy}: {score} vs {want}"
            );
            assert!(dir.join("README.md").is_file());
        }
    }
}

#[test]
fn run_writes_the_report_with_every_required_field() {
    let out = tmp("run");
    let o = run(&["run"], &out, &["--set", "refine.iterations=2"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("report.md"),
        "run must print where the report is"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    for split in ["eval", "hard"] {
        for policy in ["expert", "sft", "rl"] {
            for m in [
                "driving_score",
                "route_completion",
                "infraction_penalty",
                "collision_rate",
                "offroad_rate",
                "red_light_rate",
                "comfort_pass_rate",
                "nuplan_score",
                "ade",
                "fde",
            ] {
                let v = &report["splits"][split][policy][m];
                assert!(v.is_number(), "splits.{split}.{policy}.{m} = {v}");
            }
        }
        let ds = report["splits"][split]["expert"]["driving_score"]
            .as_f64()
            .unwrap();
        assert!((0.0..=100.0).contains(&ds));
    }
    assert!(report["wall_seconds"].as_f64().unwrap() > 0.0);
    assert!(report["env_steps"].as_u64().unwrap() > 0);
    // Every stage charged its time, and the refinement's phases happen inside its stage.
    let t = |k: &str| report["timings"][k].as_f64().unwrap_or(f64::NAN);
    for stage in ["record", "train-sft", "refine", "evaluate", "report"] {
        assert!(t(stage) > 0.0, "timings.{stage} = {}", t(stage));
    }
    let phases: f64 = report["timings"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.starts_with("refine: "))
        .map(|(_, v)| v.as_f64().unwrap())
        .sum();
    assert!(
        phases > 0.0 && phases <= t("refine"),
        "{phases} vs {}",
        t("refine")
    );
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.contains("figures/families_eval.svg") && out.join("figures/learning_curve.svg").exists()
    );
    // `compare` reads two evaluation files; metrics are named from the registry.
    let (sft, rl) = (
        out.join("eval/eval_sft.json"),
        out.join("eval/eval_rl.json"),
    );
    let o = bin()
        .arg("compare")
        .args([&sft, &rl])
        .args(["--metric", "failure_rate", "--metric", "driving_score"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let rows: Vec<&str> = stdout.lines().skip(1).map(|l| l.trim()).collect();
    assert_eq!(rows.len(), 2, "{stdout}");
    assert!(rows[0].starts_with("failure_rate:") && rows[1].starts_with("driving_score:"));
    let o = bin()
        .arg("compare")
        .args([&sft, &rl])
        .args(["--metric", "failure_rte"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        text(&o).contains("unknown metric `failure_rte`") && text(&o).contains("failure_rate"),
        "{}",
        text(&o)
    );
    // Every evaluation also wrote the field's formats, with report.json's numbers.
    check_field_formats(&out, &report);
    let sft_formats = out.join("eval/eval/sft");
    let names = [
        "carla_leaderboard.json",
        "nuplan_aggregator.csv",
        "README.md",
    ];
    let formats_before: Vec<Vec<u8>> = names
        .iter()
        .map(|n| std::fs::read(sft_formats.join(n)).unwrap())
        .collect();
    std::fs::remove_dir_all(&sft_formats).unwrap();
    // A standalone `report` rewrites the same numbers and keeps the run's wall time; only the
    // time charged to the report stage grows. Field formats that are missing are written
    // again from the evaluation file, the same bytes.
    let o = run(&["report"], &out, &["--set", "refine.iterations=2"]);
    assert!(o.status.success(), "{}", text(&o));
    for (n, before) in names.iter().zip(&formats_before) {
        assert_eq!(&std::fs::read(sft_formats.join(n)).unwrap(), before, "{n}");
    }
    let mut again: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let (mut report, timings) = (report.clone(), report["timings"].clone());
    for stage in ["record", "train-sft", "refine", "evaluate"] {
        assert_eq!(again["timings"][stage], timings[stage], "{stage}");
    }
    assert!(again["timings"]["report"].as_f64() > timings["report"].as_f64());
    for r in [&mut report, &mut again] {
        r.as_object_mut().unwrap().remove("timings");
    }
    assert_eq!(again, report);
    // Each example's `render` command, as the report prints it, writes its files again bit for
    // bit; `render` of two policies draws them at one crop.
    for example in report["examples"].as_array().unwrap() {
        let files: Vec<PathBuf> = example["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| out.join(f.as_str().unwrap()))
            .collect();
        assert_eq!(files.len(), 4, "two pictures, a filmstrip, a motion chart");
        let id = example["id"].as_str().unwrap();
        assert!(files.iter().all(|f| f.to_string_lossy().contains(id)));
        let before: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
        files.iter().for_each(|f| std::fs::remove_file(f).unwrap());
        let command = example["command"].as_str().unwrap();
        let args: Vec<&str> = command.split_whitespace().skip(1).collect();
        let o = bin().args(&args).output().unwrap();
        assert!(o.status.success(), "{command}: {}", text(&o));
        for (f, b) in files.iter().zip(&before) {
            assert_eq!(&std::fs::read(f).unwrap(), b, "{}", f.display());
        }
    }
    let o = run(
        &[
            "render", "--family", "merge", "--index", "1", "--policy", "sft", "--policy", "rl",
        ],
        &out,
        &["--set", "refine.iterations=2"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let view_box = |policy: &str| {
        let svg = std::fs::read_to_string(
            out.join(format!("figures/episodes/eval_merge_4000013_{policy}.svg")),
        )
        .unwrap();
        let start = svg.find("viewBox=\"").unwrap() + 9;
        svg[start..start + svg[start..].find('"').unwrap()].to_string()
    };
    assert_eq!(view_box("sft"), view_box("rl"));
    assert!(out
        .join("figures/episodes/eval_merge_4000013_filmstrip.svg")
        .exists());
    // Rerunning the finished run does no work and changes nothing.
    let before = std::fs::read(out.join("rl.safetensors")).unwrap();
    let o = run(&["run"], &out, &["--set", "refine.iterations=2"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(before, std::fs::read(out.join("rl.safetensors")).unwrap());
    std::fs::remove_dir_all(out).ok();
}

/// The `iteration` of every line of a metrics.jsonl file, in order.
fn logged_iterations(metrics: &Path) -> Vec<u64> {
    std::fs::read_to_string(metrics)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["iteration"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

#[test]
fn validation_picks_the_refined_planner_and_the_metrics_say_which() {
    let out = tmp("selection");
    let o = run(
        &["run"],
        &out,
        &[
            "--set",
            "refine.iterations=6",
            "--set",
            "refine.select_every=2",
            "--set",
            "refine.validation_per_family=3",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Validated at 4 and 6 (every 2 from half way); the others carry no score.
    let scores: Vec<(u64, f64)> = lines
        .iter()
        .filter_map(|l| {
            Some((
                l["iteration"].as_u64()?,
                l["validation_driving_score"].as_f64()?,
            ))
        })
        .collect();
    assert_eq!(scores.iter().map(|s| s.0).collect::<Vec<_>>(), [4, 6]);
    assert!(scores.iter().all(|s| (0.0..=100.0).contains(&s.1)));
    assert!(lines
        .iter()
        .all(|l| l["seconds"]["validation"].as_f64().is_some()));
    // The checkpoint hands on the best (the earlier on a tie).
    let best = if scores[1].1 > scores[0].1 {
        scores[1]
    } else {
        scores[0]
    };
    let bytes = std::fs::read(out.join("rl.safetensors")).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let meta: serde_json::Value =
        serde_json::from_str(header["__metadata__"]["deltaplan"].as_str().unwrap()).unwrap();
    assert_eq!(meta["selected"]["iteration"].as_u64(), Some(best.0));
    assert_eq!(
        meta["selected"]["score"].as_f64().map(|x| x as f32),
        Some(best.1 as f32)
    );
    std::fs::remove_dir_all(out).ok();
}

#[test]
fn ctrl_c_saves_and_the_rerun_resumes() {
    let out = tmp("interrupt");
    let iters = ["--set", "refine.iterations=400"];
    for stage in ["record", "train-sft"] {
        let o = run(&[stage], &out, &iters);
        assert!(o.status.success(), "{}", text(&o));
    }
    let mut child = bin()
        .arg("refine")
        .arg("--out")
        .arg(&out)
        .args(SMALL)
        .args(iters)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let metrics = out.join("metrics.jsonl");
    let start = Instant::now();
    while std::fs::read_to_string(&metrics).map_or(0, |t| t.lines().count()) < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "refinement made no progress"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = Command::new("kill")
        .arg("-INT")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let code = child.wait().unwrap().code();
    assert_eq!(code, Some(130), "Ctrl-C exits with 130 after saving");
    let done = logged_iterations(&metrics);
    assert!(done.len() < 400, "interrupted before the end");
    // Resume with fewer total iterations is refused (another configuration) ...
    let o = run(&["refine"], &out, &["--set", "refine.iterations=3"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("another run"), "{}", text(&o));
    // ... the same configuration resumes and finishes, every iteration logged once, in order.
    let o = run(&["refine"], &out, &iters);
    assert!(o.status.success(), "{}", text(&o));
    let all = logged_iterations(&metrics);
    assert_eq!(all, (1..=400).collect::<Vec<u64>>());
    std::fs::remove_dir_all(out).ok();
}

#[test]
fn bad_config_fields_are_named() {
    let out = tmp("badcfg");
    let o = run(&["record"], &out, &["--set", "refine.iteratons=3"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("iteratons"), "{}", text(&o));
    let o = run(
        &["record"],
        &out,
        &["--set", "train_scenarios.difficulty.traffic_density=9"],
    );
    assert!(!o.status.success());
    let t = text(&o);
    assert!(t.contains("traffic_density") && t.contains("0 to 5"), "{t}");
    let cfg = out.with_extension("toml");
    std::fs::write(&cfg, "[refine\niterations = 3").unwrap();
    let o = bin()
        .arg("config")
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(text(&o).contains("not valid TOML"), "{}", text(&o));
    std::fs::remove_file(cfg).ok();
}

#[test]
fn missing_inputs_and_foreign_directories_are_refused_with_the_fix() {
    let out = tmp("missing");
    let o = run(&["train-sft"], &out, &[]);
    assert!(!o.status.success());
    assert!(text(&o).contains("deltaplan record"), "{}", text(&o));
    let o = run(&["refine"], &out, &[]);
    assert!(!o.status.success());
    assert!(text(&o).contains("train-sft"), "{}", text(&o));
    // A directory with someone else's files.
    let foreign = tmp("foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("notes.txt"), "mine").unwrap();
    let o = run(&["record"], &foreign, &[]);
    assert!(!o.status.success());
    assert!(text(&o).contains("not a deltaplan run"), "{}", text(&o));
    std::fs::remove_dir_all(out).ok();
    std::fs::remove_dir_all(foreign).ok();
}

#[test]
fn impossible_settings_are_refused_before_any_stage_runs() {
    for set in [
        "refine.hidden=[0]",
        "refine.ppo.learning_rate=inf",
        "sim.vehicle.wheelbase=0.0",
        "refine.ppo.num_minibatches=4096",
        "demos.seed=5",
    ] {
        let out = tmp("refused");
        let o = run(&["run"], &out, &["--set", set]);
        assert!(!o.status.success(), "{set} was accepted");
        let key = set.split('=').next().unwrap();
        assert!(text(&o).contains(key), "{set}: {}", text(&o));
        assert!(
            !out.join("demos.safetensors").exists() && !out.join("run.toml").exists(),
            "{set}: a stage ran before the configuration was refused"
        );
        std::fs::remove_dir_all(&out).ok();
    }
}

#[test]
fn an_onnx_planner_is_refined_evaluated_rendered_and_exported_in_place_of_sft() {
    // The built-in planner of a small run, exported to ONNX...
    let base = tmp("onnx-base");
    for stage in [
        &["record"][..],
        &["train-sft"],
        &["export", "--policy", "sft"],
    ] {
        let o = run(stage, &base, &[]);
        assert!(o.status.success(), "{stage:?}: {}", text(&o));
    }
    // Another run's sft.safetensors is a given planner too: run refines, evaluates and
    // reports it without demonstrations of its own.
    let from_sft = tmp("sft-run");
    let sft_file = base.join("sft.safetensors");
    let o = run(
        &["run"],
        &from_sft,
        &[
            "--planner",
            sft_file.to_str().unwrap(),
            "--set",
            "refine.iterations=2",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(from_sft.join("report.json")).unwrap())
            .unwrap();
    assert!(report["splits"]["eval"]["rl"]["driving_score"].is_number());
    assert!(report["splits"]["eval"]["sft"]["ade"].is_null());
    std::fs::remove_dir_all(&from_sft).ok();
    let onnx = base.join("export/sft.onnx");
    let planner = onnx.to_str().unwrap();
    // ...is the frozen planner of a run that records and trains nothing.
    let out = tmp("onnx-run");
    let with_planner = ["--planner", planner, "--set", "refine.iterations=2"];
    let o = run(&["run"], &out, &with_planner);
    assert!(o.status.success(), "{}", text(&o));
    assert!(out.join("report.json").exists() && out.join("rl.safetensors").exists());
    assert!(!out.join("demos.safetensors").exists() && !out.join("sft.safetensors").exists());
    let run_toml = std::fs::read_to_string(out.join("run.toml")).unwrap();
    assert!(run_toml.contains("planner = "), "{run_toml}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert!(report["splits"]["eval"]["rl"]["driving_score"].is_number());
    // Open-loop errors need demonstrations, which an ONNX run does not record.
    assert!(report["splits"]["eval"]["sft"]["ade"].is_null());
    let o = run(
        &["render", "--policy", "rl", "--family", "curvy"],
        &out,
        &with_planner,
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = run(&["export", "--policy", "rl"], &out, &with_planner);
    assert!(o.status.success(), "{}", text(&o));
    let exported = std::fs::read(out.join("export/rl.onnx")).unwrap();
    assert!(exported.len() > std::fs::read(&onnx).unwrap().len());
    // The refinement belongs to its planner: another planner is refused by its hash.
    let other = base.join("other.onnx");
    std::fs::copy(out.join("export/rl.onnx"), &other).unwrap();
    let o = run(
        &["evaluate", "--policy", "rl"],
        &out,
        &[
            "--planner",
            other.to_str().unwrap(),
            "--set",
            "refine.iterations=2",
        ],
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("another"), "{}", text(&o));
    // Stages that make the built-in planner are refused with an ONNX planner.
    let o = run(&["train-sft"], &out, &with_planner);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("refines the given planner"),
        "{}",
        text(&o)
    );
    // A file that is not ONNX is refused naming it.
    let bogus = base.join("bogus.onnx");
    std::fs::write(&bogus, b"not a model").unwrap();
    let o = run(
        &["refine"],
        &tmp("onnx-bogus"),
        &["--planner", bogus.to_str().unwrap()],
    );
    assert!(!o.status.success());
    assert!(
        text(&o).contains("not a readable ONNX model"),
        "{}",
        text(&o)
    );
    std::fs::remove_dir_all(base).ok();
    std::fs::remove_dir_all(out).ok();
}

/// The PyTorch BEV-CNN planner (the ONNX fixture with its sidecar spec) is refined, evaluated
/// with the raster its spec names, and exported back with its two inputs.
#[test]
fn the_pytorch_bev_planner_is_refined_and_exported() {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../onnx/tests/fixtures/bev_cnn.onnx");
    let planner = fixture.to_str().unwrap();
    let out = tmp("bev-planner");
    let with_planner = [
        "--planner",
        planner,
        "--set",
        "refine.iterations=6",
        "--set",
        "refine.ppo.critic_warmup_iters=3",
    ];
    let o = run(&["run"], &out, &with_planner);
    assert!(o.status.success(), "{}", text(&o));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    for split in ["eval", "hard"] {
        let s = &report["splits"][split];
        assert_eq!(s["sft"]["episodes"], 10, "{split}");
        // The actor moved after the critic's warm-up: the refined planner drives differently.
        assert_ne!(
            s["rl"]["driving_score"], s["sft"]["driving_score"],
            "{split}"
        );
    }
    let o = run(&["export", "--policy", "rl"], &out, &with_planner);
    assert!(o.status.success(), "{}", text(&o));
    let exported = out.join("export/rl.onnx");
    let o = run(
        &["evaluate", "--policy", "sft", "--split", "eval"],
        &tmp("bev-exported"),
        &["--planner", exported.to_str().unwrap()],
    );
    assert!(
        o.status.success(),
        "the exported planner loads and drives: {}",
        text(&o)
    );
    std::fs::remove_dir_all(out).ok();
}

/// `render-bev` writes the raster as a PNG (composite, then each channel) with the ego where
/// the spec puts it, and `record` with `demos.bev` stores rasters beside the observations.
#[test]
fn render_bev_and_record_with_rasters() {
    let out = tmp("bev");
    let spec = ["--set", "demos.bev={height = 32, width = 40}"];
    let o = bin()
        .args([
            "render-bev",
            "--family",
            "intersection",
            "--step",
            "5",
            "--out",
        ])
        .arg(&out)
        .args(spec)
        .output()
        .expect("run deltaplan");
    assert!(o.status.success(), "{}", text(&o));
    let png_path = out.join("figures/bev/eval_intersection_0_t5.png");
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(&png_path).expect("the PNG"),
    ));
    let mut reader = decoder.read_info().expect("a PNG header");
    let mut rgb = vec![0; reader.output_buffer_size().expect("a size")];
    let info = reader.next_frame(&mut rgb).expect("PNG data");
    // 10 tiles (composite + 9 channels) of 40 x 4 pixels with 4-pixel gaps, 32 x 4 high.
    assert_eq!((info.width, info.height), (10 * 164 - 4, 128));
    // The ego's centre: row 32 - 9 / 0.75 = 20, column 20; purple in the composite, white in
    // the last tile (the ego channel).
    let at = |x: usize, y: usize| &rgb[(y * info.width as usize + x) * 3..][..3];
    assert_eq!(at(20 * 4 + 1, 20 * 4 + 1), [177, 13, 201]);
    assert_eq!(at(9 * 164 + 20 * 4 + 1, 20 * 4 + 1), [255, 255, 255]);
    assert_eq!(at(9 * 164 + 1, 1), [0, 0, 0]);

    let run = out.join("run");
    let o = bin()
        .args(["record", "--out"])
        .arg(&run)
        .args(["--set", "demos.steps=5", "--set", "demos.n_envs=2"])
        .args(spec)
        .output()
        .expect("run deltaplan");
    assert!(o.status.success(), "{}", text(&o));
    let ds = deltaplan_learn::dataset::Dataset::load(&run).expect("the recording");
    assert_eq!(ds.bev.as_ref().map(Vec::len), Some(10 * 9 * 32 * 40));
    let _ = std::fs::remove_dir_all(&out);
}
