//! The faults that happen to real runs, each reproduced: non-finite training, kills between a
//! stage's output and its side files (through the fault points of `deltaplan_stdx::fault`),
//! damaged and truncated files, another configuration's files, changed `[eval]` settings,
//! a full disk and a read-only directory, a second process on the same run directory.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

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
    "refine.iterations=4",
    "--set",
    "checkpoint_every=2",
    "--set",
    "eval.per_family=2",
    "--set",
    "eval.examples=1",
];

fn tmp(name: &str) -> PathBuf {
    common::tmp("rel", name)
}

/// Runs `deltaplan ARGS --out OUT SMALL EXTRA` with the environment `env`.
fn run_env(args: &[&str], out: &Path, extra: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = bin();
    c.args(args).arg("--out").arg(out).args(SMALL).args(extra);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run deltaplan")
}

fn run(args: &[&str], out: &Path, extra: &[&str]) -> Output {
    run_env(args, out, extra, &[])
}

/// Runs `deltaplan ARGS --out OUT SMALL` as the user `nobody` (uid 65534), from a copy of the
/// binary that user may execute (the checkout's own may sit in a directory only root reads).
/// Only root may switch users; the tests call it as root.
fn as_nobody(args: &[&str], out: &Path) -> Output {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let dir = tmp("nobody-bin");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let exe = dir.join("deltaplan");
    std::fs::copy(env!("CARGO_BIN_EXE_deltaplan"), &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let o = std::process::Command::new(&exe)
        .env("RUST_LOG", "warn")
        .env("CI", "1")
        .uid(65534)
        .gid(65534)
        .args(args)
        .arg("--out")
        .arg(out)
        .args(SMALL)
        .output()
        .expect("run deltaplan as nobody");
    std::fs::remove_dir_all(dir).ok();
    o
}

fn ok(o: Output) -> Output {
    assert!(o.status.success(), "{}", text(&o));
    o
}

fn failed(o: Output) -> String {
    assert!(!o.status.success(), "succeeded: {}", text(&o));
    text(&o)
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

/// Non-finite values among the F32 tensors of a safetensors file (read without deltaplan's
/// loader, which would refuse it).
fn non_finite_values(path: &Path) -> usize {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    bytes[8 + n..]
        .chunks_exact(4)
        .filter(|c| !f32::from_le_bytes([c[0], c[1], c[2], c[3]]).is_finite())
        .count()
}

fn tmp_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            found.extend(tmp_files(&p));
        } else if p.to_string_lossy().ends_with(".tmp") {
            found.push(p);
        }
    }
    found
}

#[test]
fn a_hopeless_sft_learning_rate_ends_with_a_message_and_no_checkpoint() {
    let out = tmp("sft-lr");
    let t = failed(run(&["run"], &out, &["--set", "sft.lr=1e38"]));
    assert!(
        t.contains("non-finite")
            && t.contains("SFT epoch 1")
            && t.contains("no SFT checkpoint was written"),
        "{t}"
    );
    assert!(!out.join("sft.safetensors").exists());
    std::fs::remove_dir_all(out).ok();
}

#[test]
fn a_nan_reward_stops_refinement_and_names_the_checkpoint_that_exists() {
    let out = tmp("nan-reward");
    // 32 rollout steps per iteration: the 97th step is iteration 4's first; checkpoints are
    // written every 2 iterations, so iteration 2's is the last good one.
    let t = failed(run_env(
        &["run"],
        &out,
        &[],
        &[("DELTAPLAN_FAULT", "nan:refine:reward@97")],
    ));
    assert!(
        t.contains("reward NaN of world 0 (scenario")
            && t.contains("refinement iteration 4, rollout step 1")
            && t.contains("the last good checkpoint is")
            && t.contains("(iteration 2)"),
        "{t}"
    );
    assert_eq!(non_finite_values(&out.join("rl.safetensors")), 0);
    // The rerun resumes from iteration 2 and completes, each iteration logged once.
    ok(run(&["refine"], &out, &[]));
    assert_eq!(
        logged_iterations(&out.join("metrics.jsonl")),
        vec![1, 2, 3, 4]
    );
    std::fs::remove_dir_all(out).ok();
}

/// A NaN gradient and an infinite weight, injected into the first PPO minibatch update, stop
/// training before the update is applied or saved, naming the tensor and where.
#[test]
fn a_nan_gradient_or_an_infinite_weight_stops_refinement_naming_the_tensor() {
    for (point, what) in [
        (
            "nan:ppo:gradient@1",
            "gradient of tensor `critic.0.weight` (1 of",
        ),
        ("nan:ppo:weight@1", "weight tensor `critic.0.weight` (1 of"),
    ] {
        let out = tmp(point.split(':').nth(2).unwrap_or("ppo"));
        let t = failed(run_env(&["run"], &out, &[], &[("DELTAPLAN_FAULT", point)]));
        assert!(
            t.contains(what)
                && t.contains("refinement iteration 1 (PPO epoch 1, minibatch 1)")
                && t.contains("no refinement checkpoint was written"),
            "{point}: {t}"
        );
        assert!(!out.join("rl.safetensors").exists());
        std::fs::remove_dir_all(out).ok();
    }
}

#[test]
fn a_hopeless_reward_scale_stops_before_any_checkpoint_and_says_so() {
    let out = tmp("reward-scale");
    let t = failed(run(&["run"], &out, &["--set", "refine.reward_scale=1e19"]));
    assert!(
        t.contains("non-finite value: PPO loss term")
            && t.contains("refinement iteration 1")
            && t.contains("no refinement checkpoint was written"),
        "{t}"
    );
    assert!(!out.join("rl.safetensors").exists());
    std::fs::remove_dir_all(out).ok();
}

/// Kills `deltaplan ARGS` at fault point `point`, then reruns it to the end.
fn kill_at_then_rerun(args: &[&str], out: &Path, point: &str) {
    let o = run_env(args, out, &[], &[("DELTAPLAN_FAULT", point)]);
    assert!(
        !o.status.success()
            && text(&o).contains(&format!(
                "fault injected: abort at {}",
                point.split('@').next().unwrap()
            )),
        "{point}: {}",
        text(&o)
    );
    ok(run(args, out, &[]));
    assert_eq!(tmp_files(out), Vec::<PathBuf>::new(), "{point}");
}

#[test]
fn kills_between_outputs_and_side_files_are_recovered() {
    let out = tmp("windows");
    // A kill before run.toml's rename leaves run.toml.tmp; the directory is not refused.
    kill_at_then_rerun(&["record"], &out, "write-tmp:run.toml");
    std::fs::write(out.join("run.tmp"), "torn").unwrap();
    // After the SFT checkpoint's rename: its report is already there (written first).
    kill_at_then_rerun(&["train-sft"], &out, "write-done:sft.safetensors");
    let report = std::fs::read(out.join("sft_report.json")).unwrap();
    // Before the SFT checkpoint's rename: retrained, the same report.
    std::fs::remove_file(out.join("sft.safetensors")).unwrap();
    kill_at_then_rerun(&["train-sft"], &out, "write-tmp:sft.safetensors");
    assert_eq!(std::fs::read(out.join("sft_report.json")).unwrap(), report);
    // Between a checkpoint's rename and the next metrics line, and between a metrics line and
    // its checkpoint: every iteration logged exactly once.
    kill_at_then_rerun(&["refine"], &out, "write-done:rl.safetensors");
    assert_eq!(
        logged_iterations(&out.join("metrics.jsonl")),
        vec![1, 2, 3, 4]
    );
    std::fs::remove_file(out.join("rl.safetensors")).unwrap();
    kill_at_then_rerun(&["refine"], &out, "refine:appended@3");
    assert_eq!(
        logged_iterations(&out.join("metrics.jsonl")),
        vec![1, 2, 3, 4]
    );
    // Inside the report's writes: the rerun writes a whole report with the wall time known.
    kill_at_then_rerun(&["run"], &out, "write-tmp:report.json");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert!(report["wall_seconds"].as_f64().unwrap() > 0.0);
    // Between an evaluation file and its key: re-evaluated, not trusted.
    kill_at_then_rerun(
        &["evaluate", "--policy", "rl", "--split", "hard"],
        &out,
        "write-done:hard_rl.json",
    );
    assert!(out.join("eval/hard_rl.key").exists());
    std::fs::remove_dir_all(out).ok();
}

/// Flips bit `bit` of the first value of tensor `name` in a safetensors file.
fn flip_bit(path: &Path, name: &str, bit: u32) {
    let mut bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let start = header[name]["data_offsets"][0].as_u64().unwrap() as usize + 8 + n;
    let mut v = u32::from_le_bytes(bytes[start..start + 4].try_into().unwrap());
    v ^= 1 << bit;
    bytes[start..start + 4].copy_from_slice(&v.to_le_bytes());
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn damaged_and_truncated_files_are_named_and_the_advice_works() {
    let out = tmp("damaged");
    ok(run(&["run"], &out, &[]));
    let rl = out.join("rl.safetensors");
    let (rl_bytes, sft_bytes, demos_bytes) = (
        std::fs::read(&rl).unwrap(),
        std::fs::read(out.join("sft.safetensors")).unwrap(),
        std::fs::read(out.join("demos.safetensors")).unwrap(),
    );
    // One exponent bit of an actor weight: refused, naming the file and the problem.
    flip_bit(&rl, "actor_mean.0.weight", 30);
    let t = failed(run(&["evaluate", "--policy", "rl"], &out, &[]));
    assert!(
        t.contains("rl.safetensors") && t.contains("does not match the hash"),
        "{t}"
    );
    // The advice (`deltaplan refine`) rebuilds it: the same bits as before.
    assert!(t.contains("deltaplan refine"), "{t}");
    let t = text(&ok(run(&["refine"], &out, &[])));
    assert!(t.contains("starting the refinement again"), "{t}");
    assert!(
        std::fs::read(&rl).unwrap() == rl_bytes,
        "rebuilt rl differs"
    );
    // A truncated SFT checkpoint: the stage that reads it names `train-sft`, which rebuilds it.
    let sft = out.join("sft.safetensors");
    std::fs::write(&sft, &sft_bytes[..sft_bytes.len() / 2]).unwrap();
    let t = failed(run(&["evaluate", "--policy", "sft"], &out, &[]));
    assert!(
        t.contains("sft.safetensors") && t.contains("deltaplan train-sft"),
        "{t}"
    );
    let t = text(&ok(run(&["train-sft"], &out, &[])));
    assert!(t.contains("training it again"), "{t}");
    assert!(
        std::fs::read(&sft).unwrap() == sft_bytes,
        "rebuilt sft differs"
    );
    // Truncated demonstrations: `train-sft` names `record`, which rebuilds them.
    std::fs::remove_file(&sft).unwrap();
    let demos = out.join("demos.safetensors");
    std::fs::write(&demos, &demos_bytes[..1000]).unwrap();
    let t = failed(run(&["train-sft"], &out, &[]));
    assert!(
        t.contains("demos.safetensors") && t.contains("deltaplan record"),
        "{t}"
    );
    let t = text(&ok(run(&["record"], &out, &[])));
    assert!(t.contains("recording it again"), "{t}");
    assert!(
        std::fs::read(&demos).unwrap() == demos_bytes,
        "rebuilt demos differ"
    );
    ok(run(&["train-sft"], &out, &[]));
    assert!(
        std::fs::read(&sft).unwrap() == sft_bytes,
        "rebuilt sft differs"
    );
    std::fs::remove_dir_all(out).ok();
}

#[test]
fn a_run_directory_another_process_writes_into_is_refused_and_a_foreign_one_is_left_as_found() {
    let out = tmp("locked");
    std::fs::create_dir_all(&out).unwrap();
    // This test process plays the other deltaplan process: it holds the directory's lock.
    let held = std::fs::File::create(out.join("run.lock")).unwrap();
    held.try_lock().unwrap();
    let t = failed(run(&["record"], &out, &[]));
    assert!(
        t.contains("another deltaplan process is writing into")
            && t.contains("choose another --out"),
        "{t}"
    );
    assert!(
        !out.join("run.toml").exists() && !out.join("demos.safetensors").exists(),
        "the refused process wrote into the locked directory"
    );
    // Once the other process ends (its handle closes), the directory is usable.
    drop(held);
    ok(run(&["record"], &out, &[]));
    assert!(out.join("demos.safetensors").exists());
    std::fs::remove_dir_all(&out).ok();

    // A directory refused as not a deltaplan run keeps exactly what it had.
    let foreign = tmp("foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("notes.txt"), b"mine").unwrap();
    let t = failed(run(&["record"], &foreign, &[]));
    assert!(t.contains("is not a deltaplan run"), "{t}");
    let left: Vec<_> = std::fs::read_dir(&foreign)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("notes.txt")]);
    std::fs::remove_dir_all(foreign).ok();
}

#[test]
fn another_seeds_files_are_refused_and_eval_settings_change_without_retraining() {
    let out = tmp("adopt");
    ok(run(&["run"], &out, &[]));
    let rl = std::fs::read(out.join("rl.safetensors")).unwrap();
    // [eval] settings do not affect training: `report` and `run` re-evaluate in place.
    let more = ["--set", "eval.per_family=3"];
    ok(run(&["report"], &out, &more));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(
        report["splits"]["eval"]["rl"]["episodes"].as_u64(),
        Some(15)
    );
    ok(run(&["run"], &out, &["--set", "eval.per_family=1"]));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(
        report["splits"]["hard"]["sft"]["episodes"].as_u64(),
        Some(5)
    );
    assert!(
        std::fs::read(out.join("rl.safetensors")).unwrap() == rl,
        "rl changed"
    );
    // Without run.toml, another seed's files are refused, naming the difference.
    std::fs::remove_file(out.join("run.toml")).unwrap();
    let t = failed(run(&["run"], &out, &["--seed", "2"]));
    assert!(
        t.contains("demos.safetensors") && t.contains("seed 1, this run has seed 2"),
        "{t}"
    );
    assert!(
        !out.join("run.toml").exists(),
        "the refused directory was marked as ours"
    );
    let t = failed(run(&["refine"], &out, &["--seed", "2"]));
    assert!(t.contains("seed 1, this run has seed 2"), "{t}");
    // The same seed's files are adopted as they are.
    ok(run(&["run"], &out, &[]));
    assert!(
        std::fs::read(out.join("rl.safetensors")).unwrap() == rl,
        "rl changed"
    );
    std::fs::remove_dir_all(out).ok();
}

#[test]
fn a_full_disk_and_a_read_only_directory_are_clear_errors_and_keep_the_old_files() {
    let out = tmp("disk");
    // A checkpoint at iteration 2 (the kill stops the run right after it).
    let o = run_env(
        &["run"],
        &out,
        &[],
        &[("DELTAPLAN_FAULT", "write-done:rl.safetensors")],
    );
    assert!(!o.status.success());
    let rl = std::fs::read(out.join("rl.safetensors")).unwrap();
    // The disk fills while iteration 4's checkpoint is written: the error names the file and
    // the cause; the previous checkpoint is intact and nothing half-written is left.
    let full = [("DELTAPLAN_FAULT_ENOSPC", "rl.safetensors")];
    let t = failed(run_env(&["refine"], &out, &[], &full));
    assert!(
        t.contains("rl.safetensors") && t.contains("No space left on device"),
        "{t}"
    );
    assert!(
        std::fs::read(out.join("rl.safetensors")).unwrap() == rl,
        "rl changed"
    );
    assert_eq!(tmp_files(&out), Vec::<PathBuf>::new());
    // The same for the report, over a previous one.
    ok(run(&["run"], &out, &[]));
    let report = std::fs::read(out.join("report.json")).unwrap();
    let full = [("DELTAPLAN_FAULT_ENOSPC", "report.json")];
    let t = failed(run_env(&["report"], &out, &[], &full));
    assert!(
        t.contains("report.json") && t.contains("No space left on device"),
        "{t}"
    );
    assert!(
        std::fs::read(out.join("report.json")).unwrap() == report,
        "report changed"
    );
    assert_eq!(tmp_files(&out), Vec::<PathBuf>::new());
    // A read-only output directory. Root writes through permissions, so as root the command
    // runs as `nobody`, whom the directory's mode binds.
    use std::os::unix::fs::PermissionsExt;
    let mode = |m| std::fs::set_permissions(&out, std::fs::Permissions::from_mode(m)).unwrap();
    mode(0o555);
    let root = std::fs::write(out.join("probe"), "").is_ok();
    std::fs::remove_file(out.join("probe")).ok();
    let o = if root {
        as_nobody(&["report"], &out)
    } else {
        run(&["report"], &out, &[])
    };
    let t = failed(o);
    assert!(
        t.contains("cannot write")
            && t.contains("Permission denied")
            && t.contains(&out.display().to_string()),
        "{t}"
    );
    assert!(
        std::fs::read(out.join("report.json")).unwrap() == report,
        "report changed"
    );
    assert_eq!(tmp_files(&out), Vec::<PathBuf>::new());
    mode(0o755);
    std::fs::remove_dir_all(out).ok();
}
