//! The stages of a run and the files they exchange in the output directory:
//!
//! | stage | reads | writes |
//! |---|---|---|
//! | record | - | `demos.safetensors` |
//! | train-sft | demos | `sft.safetensors`, `sft_report.json` |
//! | refine | demos (normalisation lives in sft), sft | `rl.safetensors` (checkpoint, every iteration), `metrics.jsonl` |
//! | evaluate | sft, rl | `eval/<split>_<policy>.json` |
//! | report | eval files, metrics | `report.md`, `report.json`, `figures/` |
//!
//! Every file is written atomically, so an interrupted stage leaves either the old file or
//! the new one; rerunning the same command continues from what is on disk.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use deltaplan_eval::report::{write_report, CurvePoint, Example, PolicyRun, ReportInput, SplitRun};
use deltaplan_eval::{closed_loop, render_episode, Driver};
use deltaplan_learn::dataset::{dataset_path, record_demonstrations, Dataset};
use deltaplan_learn::refine::{load_policy, IterationStats, Refiner, ResidualPlanner};
use deltaplan_learn::sft::{self, SftPlanner, SftWorkspace};
use deltaplan_sim::{EpisodeStats, Family, ScenarioSpec, Split, OBS_DIM};
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::{PolicyArg, SplitArg};

/// Set by Ctrl-C while a refinement is running: it saves and stops after the current iteration.
static STOP: AtomicBool = AtomicBool::new(false);
/// Whether a stage that can stop cleanly is running (otherwise Ctrl-C exits at once: every
/// file is written atomically, so nothing is lost but the unfinished stage).
static REFINING: AtomicBool = AtomicBool::new(false);

/// The run was interrupted (exit code 130); rerunning resumes it.
#[derive(Debug)]
pub struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "interrupted: the checkpoint is saved; rerun the same command to resume"
        )
    }
}
impl std::error::Error for Interrupted {}

pub fn install_interrupt_handler() {
    let _ = ctrlc::set_handler(|| {
        if REFINING.load(Ordering::SeqCst) && !STOP.swap(true, Ordering::SeqCst) {
            eprintln!("\nCtrl-C: finishing the current iteration, saving the checkpoint, then exiting (Ctrl-C again to quit now)");
        } else {
            eprintln!("\ninterrupted");
            std::process::exit(130);
        }
    });
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template(&format!(
            "{what:>10} [{{elapsed_precise}}] {{bar:30}} {{pos}}/{{len}} {{per_sec}} ETA {{eta}} {{msg}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    if std::env::var_os("CI").is_some() {
        pb.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    pb
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    fs::rename(&tmp, path)
        .with_context(|| format!("cannot rename {} into place", tmp.display()))?;
    Ok(())
}

fn config_hash(cfg: &Config) -> String {
    let digest = Sha256::digest(cfg.to_toml().as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Refuses an output directory that holds another configuration's run; records ours.
pub fn guard(cfg: &Config, out: &Path) -> Result<()> {
    fs::create_dir_all(out)
        .with_context(|| format!("cannot create output directory {}", out.display()))?;
    let marker = out.join("run.toml");
    let ours = cfg.to_toml();
    match fs::read_to_string(&marker) {
        Ok(theirs) if theirs == ours => Ok(()),
        Ok(_) => bail!(
            "output directory {} holds another run's files (its run.toml differs from this configuration): \
             choose a new --out, or pass the same --config/--set/--seed as that run to resume it",
            out.display()
        ),
        Err(_) => {
            if fs::read_dir(out)?.next().is_some() && !out.join("demos.safetensors").exists() {
                bail!(
                    "output directory {} is not empty and is not a deltaplan run: choose an empty or new --out",
                    out.display()
                );
            }
            write_atomic(&marker, ours.as_bytes())
        }
    }
}

pub fn record(cfg: &Config, out: &Path) -> Result<()> {
    let path = dataset_path(out);
    if path.exists() {
        tracing::info!("demonstrations already recorded: {}", path.display());
        return Ok(());
    }
    let t = Instant::now();
    let pb = bar(cfg.demos.steps as u64, "record");
    let ds = record_demonstrations(&cfg.recording(), |step| pb.set_position(step as u64))?;
    pb.finish_and_clear();
    ds.save(out)?;
    tracing::info!(
        "recorded {} expert samples in {:.1} s -> {}",
        ds.n_samples(),
        t.elapsed().as_secs_f64(),
        path.display()
    );
    Ok(())
}

fn sft_path(out: &Path) -> PathBuf {
    out.join("sft.safetensors")
}

fn load_sft(cfg: &Config, out: &Path) -> Result<SftPlanner> {
    let path = sft_path(out);
    if !path.exists() {
        bail!(
            "{} is missing: run `deltaplan train-sft --out {}` first",
            path.display(),
            out.display()
        );
    }
    let p = SftPlanner::load_expecting(&path, OBS_DIM)?;
    p.check_compatible(&cfg.sim)?;
    Ok(p)
}

pub fn train_sft(cfg: &Config, out: &Path) -> Result<()> {
    let path = sft_path(out);
    if path.exists() {
        tracing::info!("SFT planner already trained: {}", path.display());
        return Ok(());
    }
    let ds =
        Dataset::load(out).context("the SFT planner is trained on the recorded demonstrations")?;
    let t = Instant::now();
    let pb = bar(cfg.sft.epochs as u64, "train-sft");
    let (planner, report) = sft::train_sft(&cfg.sft, &ds, cfg.stage_seed(), |e| {
        pb.set_position(e.epoch as u64);
        pb.set_message(format!("val ADE {:.3} m FDE {:.3} m", e.val_ade, e.val_fde));
    })?;
    pb.finish_and_clear();
    planner.save(&path)?;
    write_atomic(
        &out.join("sft_report.json"),
        serde_json::to_string_pretty(&report)?.as_bytes(),
    )?;
    tracing::info!(
        "SFT planner trained in {:.1} s: best epoch {}, val ADE {:.3} m, FDE {:.3} m -> {}",
        t.elapsed().as_secs_f64(),
        report.best_epoch,
        report.best_val_ade,
        report.best_val_fde,
        path.display()
    );
    Ok(())
}

fn rl_path(out: &Path) -> PathBuf {
    out.join("rl.safetensors")
}

pub fn refine(cfg: &Config, out: &Path) -> Result<()> {
    let sft = load_sft(cfg, out)?;
    let path = rl_path(out);
    let metrics_path = out.join("metrics.jsonl");
    let mut r = if path.exists() {
        let r = Refiner::resume(&path, &sft)?;
        if r.cfg != cfg.refine || r.sim != cfg.sim || r.scenarios != cfg.train_scenarios {
            bail!(
                "{} was written with another [refine], [sim] or [train_scenarios] configuration: use the same configuration, or a new --out",
                path.display()
            );
        }
        tracing::info!(
            "resuming refinement at iteration {}/{}",
            r.iteration,
            r.cfg.iterations
        );
        r
    } else {
        Refiner::new(
            cfg.refine.clone(),
            cfg.sim,
            cfg.train_scenarios.clone(),
            &sft,
            cfg.stage_seed(),
        )?
    };
    // Keep the metrics of the iterations the checkpoint holds; drop any written after it.
    let kept: Vec<String> = fs::read_to_string(&metrics_path)
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            serde_json::from_str::<IterationStats>(l).is_ok_and(|s| s.iteration <= r.iteration)
        })
        .map(str::to_string)
        .collect();
    let mut text = kept.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    write_atomic(&metrics_path, text.as_bytes())?;
    if r.done() {
        tracing::info!("refinement already complete: {}", path.display());
        return Ok(());
    }
    let mut metrics = fs::OpenOptions::new().append(true).open(&metrics_path)?;
    let pb = bar(r.cfg.iterations as u64, "refine");
    pb.set_position(r.iteration as u64);
    REFINING.store(true, Ordering::SeqCst);
    let result = (|| -> Result<()> {
        while !r.done() {
            let s = r.iterate()?;
            if !s.policy_loss.is_finite() || !s.value_loss.is_finite() {
                bail!(
                    "refinement diverged at iteration {} (policy loss {}, value loss {}): lower refine.ppo.learning_rate or refine.max_delta; the last good checkpoint is {}",
                    s.iteration, s.policy_loss, s.value_loss, path.display()
                );
            }
            // Checkpoint every `checkpoint_every` iterations, at the end, and on Ctrl-C; a
            // resumed run drops the metrics lines written after its checkpoint.
            let stopping = STOP.load(Ordering::SeqCst);
            if r.done() || stopping || s.iteration.is_multiple_of(cfg.checkpoint_every.max(1)) {
                r.save(&path)?;
            }
            writeln!(metrics, "{}", serde_json::to_string(&s)?)?;
            pb.set_position(s.iteration as u64);
            pb.set_message(format!(
                "DS {:.1} fail {:.0}% |delta| {:.2} m kl {:.3} {:.0} steps/s",
                s.driving_score,
                100.0 * (s.collision_rate + s.offroad_rate),
                s.residual_magnitude,
                s.approx_kl,
                s.steps_per_second
            ));
            if stopping {
                return Err(Interrupted.into());
            }
        }
        Ok(())
    })();
    REFINING.store(false, Ordering::SeqCst);
    pb.finish_and_clear();
    result?;
    tracing::info!(
        "refinement done: {} iterations, {} env steps -> {}",
        r.iteration,
        r.env_steps,
        path.display()
    );
    Ok(())
}

fn split_of(s: SplitArg) -> Split {
    match s {
        SplitArg::Eval => Split::Eval,
        SplitArg::Hard => Split::Hard,
    }
}

fn policy_name(p: PolicyArg) -> &'static str {
    match p {
        PolicyArg::Expert => "expert",
        PolicyArg::Sft => "sft",
        PolicyArg::Rl => "rl",
    }
}

fn suite(cfg: &Config, split: Split) -> Vec<ScenarioSpec> {
    split.suite(&Family::ALL, cfg.eval.per_family, cfg.eval.difficulty)
}

/// Runs `f` with a [`Driver`] for `policy` (loading the networks it needs).
fn with_driver<T>(
    cfg: &Config,
    out: &Path,
    policy: PolicyArg,
    f: impl FnOnce(&mut Driver) -> Result<T>,
) -> Result<T> {
    match policy {
        PolicyArg::Expert => f(&mut Driver::Expert),
        PolicyArg::Sft => {
            let sft = load_sft(cfg, out)?;
            let mut ws = SftWorkspace::new();
            let (mut z, zd) = (Vec::new(), sft.z_dim());
            let mut planner = |obs: &[f32], plans: &mut [f32]| {
                z.resize(obs.len() / OBS_DIM * zd, 0.0);
                sft.forward(obs, &mut ws, &mut z, plans)
                    .map_err(|e| e.to_string())
            };
            f(&mut Driver::Planner(&mut planner))
        }
        PolicyArg::Rl => {
            let sft = load_sft(cfg, out)?;
            let path = rl_path(out);
            if !path.exists() {
                bail!(
                    "{} is missing: run `deltaplan refine --out {}` first",
                    path.display(),
                    out.display()
                );
            }
            let loaded = load_policy(&path, &sft)?;
            if loaded.iteration < loaded.iterations {
                tracing::warn!(
                    "{} holds iteration {} of {}: evaluating an unfinished refinement",
                    path.display(),
                    loaded.iteration,
                    loaded.iterations
                );
            }
            let mut rp = ResidualPlanner::new(&sft, &loaded.ac, loaded.ramp);
            let mut planner =
                |obs: &[f32], plans: &mut [f32]| rp.plan(obs, plans).map_err(|e| e.to_string());
            f(&mut Driver::Planner(&mut planner))
        }
    }
}

fn eval_path(out: &Path, policy: PolicyArg, split: SplitArg) -> PathBuf {
    out.join("eval").join(format!(
        "{}_{}.json",
        split_of(split).name(),
        policy_name(policy)
    ))
}

pub fn evaluate(cfg: &Config, out: &Path, policy: PolicyArg, split: SplitArg) -> Result<PathBuf> {
    let specs = suite(cfg, split_of(split));
    let t = Instant::now();
    let episodes = with_driver(cfg, out, policy, |d| Ok(closed_loop(cfg.sim, &specs, d)?))?;
    let path = eval_path(out, policy, split);
    fs::create_dir_all(path.parent().unwrap_or(out))?;
    write_atomic(&path, serde_json::to_string(&episodes)?.as_bytes())?;
    let (s, _) = deltaplan_eval::summarize(&episodes);
    tracing::info!(
        "{} on {}: driving score {:.1}, route completion {:.1}, failures {:.1}% ({} episodes, {:.1} s)",
        policy_name(policy),
        split_of(split).name(),
        s.metrics["driving_score"].mean,
        s.metrics["route_completion"].mean,
        100.0 * s.metrics["failure_rate"].mean,
        episodes.len(),
        t.elapsed().as_secs_f64()
    );
    Ok(path)
}

fn load_eval(path: &Path) -> Result<Vec<EpisodeStats>> {
    let text = fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read {}: run `deltaplan evaluate` to create it",
            path.display()
        )
    })?;
    serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not an evaluation file of this version",
            path.display()
        )
    })
}

pub fn compare(a: &Path, b: &Path) -> Result<()> {
    let (ea, eb) = (load_eval(a)?, load_eval(b)?);
    println!(
        "paired difference B - A over {} scenarios (95% bootstrap CI)",
        ea.len()
    );
    for m in deltaplan_eval::METRICS.iter().chain(&["failure_rate"]) {
        let d = deltaplan_eval::paired_difference(&ea, &eb, m)?;
        println!("{m:>20}: {:+9.3} [{:+9.3}, {:+9.3}]", d.mean, d.lo, d.hi);
    }
    Ok(())
}

pub fn render(
    cfg: &Config,
    out: &Path,
    policy: PolicyArg,
    split: SplitArg,
    family: &str,
    index: usize,
) -> Result<()> {
    let fam = Family::ALL
        .into_iter()
        .find(|f| f.name() == family)
        .with_context(|| {
            format!(
                "unknown family `{family}`: one of curvy, hard_brake, cut_in, intersection, merge"
            )
        })?;
    if index >= cfg.eval.per_family {
        bail!(
            "--index {index} is outside the suite (eval.per_family = {})",
            cfg.eval.per_family
        );
    }
    let spec = suite(cfg, split_of(split))
        .into_iter()
        .filter(|s| s.family == fam)
        .nth(index)
        .context("scenario not in suite")?;
    let title = format!("{} {} #{index}", policy_name(policy), family);
    let (stats, svg) = with_driver(cfg, out, policy, |d| {
        Ok(render_episode(cfg.sim, spec, d, &title)?)
    })?;
    let dir = out.join("figures").join("episodes");
    fs::create_dir_all(&dir)?;
    let path = dir.join(format!(
        "{}_{}_{index}_{}.svg",
        split_of(split).name(),
        family,
        policy_name(policy)
    ));
    write_atomic(&path, svg.as_bytes())?;
    println!(
        "{}: {:?}, route completion {:.1}, driving score {:.1}",
        path.display(),
        stats.end,
        stats.route_completion,
        stats.driving_score()
    );
    Ok(())
}

/// Open-loop ADE/FDE of the SFT and refined planners against the expert on the held-out
/// demonstrations (the SFT validation episodes).
fn open_loop_errors(cfg: &Config, out: &Path) -> Result<[(f64, f64); 2]> {
    let ds = Dataset::load(out)?;
    let (_, val) = ds.split(cfg.sft.val_fraction, cfg.stage_seed())?;
    let sft = load_sft(cfg, out)?;
    let mut ws = SftWorkspace::new();
    let s = sft::evaluate(&sft, &ds, &val, cfg.sft.loss, &mut ws)?;
    let loaded = load_policy(&rl_path(out), &sft)?;
    let mut rp = ResidualPlanner::new(&sft, &loaded.ac, loaded.ramp);
    let (a, h) = (sft.action_dim(), sft.horizon());
    let (mut ade, mut fde) = (0.0f64, 0.0f64);
    let mut obs = Vec::new();
    let mut plans = Vec::new();
    for chunk in val.chunks(1024) {
        obs.clear();
        chunk
            .iter()
            .for_each(|&k| obs.extend_from_slice(ds.obs_row(k)));
        plans.resize(chunk.len() * a, 0.0);
        rp.plan(&obs, &mut plans)?;
        for (r, &k) in chunk.iter().enumerate() {
            let (p, t) = (&plans[r * a..(r + 1) * a], ds.action_row(k));
            for j in 0..h {
                let d = f64::from((p[2 * j] - t[2 * j]).hypot(p[2 * j + 1] - t[2 * j + 1]));
                ade += d / h as f64;
                if j + 1 == h {
                    fde += d;
                }
            }
        }
    }
    let n = val.len().max(1) as f64;
    Ok([(f64::from(s.ade), f64::from(s.fde)), (ade / n, fde / n)])
}

pub fn report(cfg: &Config, out: &Path, wall: Option<Duration>) -> Result<PathBuf> {
    let [sft_err, rl_err] = open_loop_errors(cfg, out)?;
    let mut splits = Vec::new();
    for split in [SplitArg::Eval, SplitArg::Hard] {
        let mut policies = Vec::new();
        for (p, err) in [
            (PolicyArg::Expert, (0.0, 0.0)),
            (PolicyArg::Sft, sft_err),
            (PolicyArg::Rl, rl_err),
        ] {
            let path = eval_path(out, p, split);
            if !path.exists() {
                evaluate(cfg, out, p, split)?;
            }
            policies.push(PolicyRun {
                name: policy_name(p).into(),
                episodes: load_eval(&path)?,
                ade: err.0,
                fde: err.1,
            });
        }
        splits.push(SplitRun {
            name: split_of(split).name().into(),
            policies,
        });
    }
    // Example episodes: SFT collides or leaves the road, RL does not.
    let mut examples = Vec::new();
    let eval_split = &splits[0];
    let specs = suite(cfg, Split::Eval);
    let fails = |e: &EpisodeStats| e.had_collision() || e.offroad > 0;
    let picks: Vec<usize> = (0..specs.len())
        .filter(|&i| {
            fails(&eval_split.policies[1].episodes[i])
                && !fails(&eval_split.policies[2].episodes[i])
        })
        .take(cfg.eval.examples)
        .collect();
    let dir = out.join("figures").join("episodes");
    fs::create_dir_all(&dir)?;
    for i in picks {
        let spec = specs[i];
        let mut images = Vec::new();
        for p in [PolicyArg::Sft, PolicyArg::Rl] {
            let title = format!(
                "{} {} seed {}",
                policy_name(p),
                spec.family.name(),
                spec.seed - Split::Eval.seed_base()
            );
            let (stats, svg) = with_driver(cfg, out, p, |d| {
                Ok(render_episode(cfg.sim, spec, d, &title)?)
            })?;
            let name = format!("eval_{}_{}_{}.svg", spec.family.name(), i, policy_name(p));
            write_atomic(&dir.join(&name), svg.as_bytes())?;
            images.push((
                format!(
                    "{} ({:?}, route completion {:.0}%)",
                    policy_name(p).to_uppercase(),
                    stats.end,
                    stats.route_completion
                ),
                format!("figures/episodes/{name}"),
            ));
        }
        examples.push(Example {
            title: format!("{} scenario {}", spec.family.name(), i),
            images,
        });
    }
    let curve: Vec<CurvePoint> = fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<IterationStats>(l).ok())
        .map(|s| CurvePoint {
            env_steps: s.env_steps as f64,
            driving_score: f64::from(s.driving_score),
            episode_return: f64::from(s.episode_return),
            failure_rate: f64::from(s.collision_rate + s.offroad_rate),
        })
        .collect();
    let env_steps = curve.last().map_or(0, |c| c.env_steps as u64);
    let wall_seconds = match wall {
        Some(w) => w.as_secs_f64(),
        None => fs::read_to_string(out.join("report.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v["wall_seconds"].as_f64())
            .unwrap_or(f64::NAN),
    };
    let input = ReportInput {
        splits,
        curve,
        wall_seconds,
        env_steps,
        examples,
        notes: vec![
            format!("seed {}, configuration hash {} (`{}/run.toml`)", cfg.seed, config_hash(cfg), out.display()),
            format!(
                "{} scenarios per family and split; `eval` and `hard` seeds are disjoint from training seeds",
                cfg.eval.per_family
            ),
        ],
    };
    write_report(out, &input)?;
    Ok(out.join("report.md"))
}

pub fn run_all(cfg: &Config, out: &Path) -> Result<()> {
    let t = Instant::now();
    guard(cfg, out)?;
    record(cfg, out)?;
    train_sft(cfg, out)?;
    refine(cfg, out)?;
    for split in [SplitArg::Eval, SplitArg::Hard] {
        for p in [PolicyArg::Expert, PolicyArg::Sft, PolicyArg::Rl] {
            evaluate(cfg, out, p, split)?;
        }
    }
    let path = report(cfg, out, Some(t.elapsed()))?;
    let v: serde_json::Value = serde_json::from_str(&fs::read_to_string(out.join("report.json"))?)?;
    for split in ["eval", "hard"] {
        let s = &v["splits"][split];
        println!(
            "{split:>5}: driving score expert {:.1} | SFT {:.1} | RL {:.1}   (RL - SFT {:+.1} [{:+.1}, {:+.1}]); collision or off-road SFT {:.1}% -> RL {:.1}%",
            s["expert"]["driving_score"].as_f64().unwrap_or(f64::NAN),
            s["sft"]["driving_score"].as_f64().unwrap_or(f64::NAN),
            s["rl"]["driving_score"].as_f64().unwrap_or(f64::NAN),
            s["paired"]["rl_minus_sft"]["driving_score"]["mean"].as_f64().unwrap_or(f64::NAN),
            s["paired"]["rl_minus_sft"]["driving_score"]["lo"].as_f64().unwrap_or(f64::NAN),
            s["paired"]["rl_minus_sft"]["driving_score"]["hi"].as_f64().unwrap_or(f64::NAN),
            100.0 * s["sft"]["failure_rate"].as_f64().unwrap_or(f64::NAN),
            100.0 * s["rl"]["failure_rate"].as_f64().unwrap_or(f64::NAN),
        );
    }
    println!(
        "report: {} ({:.0} s)",
        path.display(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}
