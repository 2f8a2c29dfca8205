//! The stages of a run and the files they exchange in the output directory:
//!
//! | stage | reads | writes |
//! |---|---|---|
//! | record | - | `demos.safetensors` |
//! | train-sft | demos | `sft.safetensors`, `sft_report.json` |
//! | refine | demos (normalisation lives in sft), sft | `rl.safetensors` (checkpoint, every iteration), `metrics.jsonl` |
//! | evaluate | sft, rl | `eval/<split>_<policy>.json`; the same episodes in the field's formats: `eval/<split>/<policy>/carla_leaderboard.json`, `nuplan_aggregator.csv`, `README.md` |
//! | evaluate in SUMO | sft, rl | `eval/sumo_<split>_<policy>.json` and its per-network table `.md` (`<policy>` also `sumo-driver`: SUMO's own driver model) |
//! | report | eval files, metrics | `report.md`, `report.json`, `figures/` |
//! | render-bev | - | `figures/bev/<split>_<family>_<index>_t<step>.png` |
//! | export | sft, rl | `export/<policy>.onnx` (or `--file`) |
//!
//! With `train_scenarios.world = "sumo"` every stage is SUMO's: SUMO's driver model records
//! the demonstrations on the training networks, refinement runs there, and the report
//! evaluates SUMO's driver (its expert), the SFT and the refined planner in SUMO on the
//! held-out networks, each evaluation file vouched for by its key like the built-in ones
//! (`eval/sumo_<split>_<policy>.key`).
//!
//! With an ONNX planner (`planner = "FILE.onnx"` or `--planner`), that file stands where
//! `sft.safetensors` stands: record and train-sft are skipped, and the report's open-loop
//! errors are undefined (there are no demonstrations to measure them on).
//!
//! Every file is written atomically (`deltaplan_stdx::fs::write_atomic`: temporary file,
//! fsync, rename), so an interrupted stage leaves either the old file or the new one; rerunning
//! the same command continues from what is on disk. The one exception is `metrics.jsonl`,
//! which grows by one line per iteration: lines are appended and fsynced before the checkpoint
//! that covers them is written, and a resumed run keeps only the complete lines up to its
//! checkpoint (rewritten atomically), so a torn last line never survives a resume.
//!
//! Crash windows between a stage's output and its side files are closed by order: a side file
//! that can be rebuilt is written first (`sft_report.json` before `sft.safetensors`, metrics
//! lines before the checkpoint, an evaluation file before the key that says which
//! configuration and checkpoints made it). `*.tmp` files a kill left behind are removed when a
//! command starts and never read. An output that does not load (truncated, a flipped bit:
//! every checkpoint carries a content hash) is rebuilt by the stage that owns it, with a
//! warning; an output another configuration made is refused, naming the difference, never
//! adopted. `[eval]` settings do not affect training: changing them re-evaluates in place.
//!
//! Fault points for the crash tests (`deltaplan_stdx::fault`, `DELTAPLAN_FAULT=POINT[@N]`):
//! `write-tmp:NAME` and `write-done:NAME` around every file write, and `refine:appended`
//! (a metrics line appended, its checkpoint not yet written); `nan:refine:reward@N` makes the
//! N-th rollout step's first reward NaN, `nan:ppo:gradient@N` and `nan:ppo:weight@N` the N-th
//! PPO minibatch update's first critic gradient NaN and first critic weight (after the
//! optimiser step) infinite.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use deltaplan_eval::episode::{filmstrip_svg, motion_svg, Row};
use deltaplan_eval::formats::{self, FieldFiles, FieldRun};
use deltaplan_eval::report::{
    write_report, ActorStart, CurvePoint, Example, PolicyRun, Report, ReportInput, SplitRun,
};
use deltaplan_eval::{
    closed_loop, fixed_failures, render_episode, trace_episode, Comparison, DisplacementError,
    DisplacementSums, Driver, Estimate, Metric, Planner, PlannerError, Policy, WithRaster,
};
use deltaplan_learn::dataset::{dataset_path, record_demonstrations, Dataset};
use deltaplan_learn::distributed::{self, DistributedRefiner, Workers};
use deltaplan_learn::refine::{
    self, load_policy, IterationStats, Learner, LoadedPolicy, Refinement, Refiner, ResidualPlanner,
};
use deltaplan_learn::sft::{self, SftPlanner, SftWorkspace};
use deltaplan_learn::{FrozenPlanner, TrainWorld};
use deltaplan_onnx::{export_refined, export_sft, OnnxPlanner, Residual};
use deltaplan_sim::{
    expert_plan, BevSpec, EndReason, EnvSnapshot, EpisodeStats, Family, ScenarioSpec, Split, World,
    OBS_DIM,
};
use deltaplan_stdx::fs::write_atomic;
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::frozen::{Frozen, FrozenWorkspace};
use crate::sumo_eval::{self, SumoEgo};
use crate::{sumo_world, timings};

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

/// Whether a server is running (Ctrl-C then stops it cleanly).
static SERVING: AtomicBool = AtomicBool::new(false);

pub fn install_interrupt_handler() {
    let _ = ctrlc::set_handler(|| {
        if REFINING.load(Ordering::SeqCst) && !STOP.swap(true, Ordering::SeqCst) {
            eprintln!("\nCtrl-C: finishing the current iteration, saving the checkpoint, then exiting (Ctrl-C again to quit now)");
        } else if SERVING.load(Ordering::SeqCst) && !STOP.swap(true, Ordering::SeqCst) {
            eprintln!("\nCtrl-C: stopping the server (Ctrl-C again to quit now)");
        } else {
            eprintln!("\ninterrupted");
            std::process::exit(130);
        }
    });
}

/// From here on Ctrl-C asks the server to stop ([`stop_requested`]) instead of exiting.
pub fn begin_serving() {
    SERVING.store(true, Ordering::SeqCst);
}

/// Whether Ctrl-C asked a server (or a refinement) to stop.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
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

/// Writes `bytes` to `path` atomically (see the module docs), naming the file on error.
fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

fn config_hash(cfg: &Config) -> String {
    let digest = Sha256::digest(cfg.to_toml().as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// The file in a run directory whose lock says a `deltaplan` process is writing there.
const RUN_LOCK: &str = "run.lock";

/// Held while a command writes into a run directory, so that a second process given the same
/// `--out` is refused instead of racing the first on the same files (both write `run.toml`,
/// and cleaning up one's temporaries would delete the other's). The operating system drops
/// the lock with the file handle: when this is dropped, or when the process ends, however it
/// ends.
#[must_use = "the run directory is locked only while this is held"]
#[derive(Debug)]
pub struct RunLock {
    file: fs::File,
    /// Where the lock file is, if this lock created it.
    created: Option<PathBuf>,
}

impl RunLock {
    fn acquire(out: &Path) -> Result<RunLock> {
        let path = out.join(RUN_LOCK);
        let created = (!path.exists()).then(|| path.clone());
        // A directory this user may read but not write: a lock on a read-only handle excludes
        // other processes just as well, and the first write that fails names its own file.
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .or_else(|e| fs::File::open(&path).map_err(|_| e))
            .with_context(|| format!("cannot write {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => Ok(RunLock { file, created }),
            Err(fs::TryLockError::WouldBlock) => bail!(
                "another deltaplan process is writing into {}: wait for it to finish, or choose another --out",
                out.display()
            ),
            Err(fs::TryLockError::Error(e)) => {
                Err(e).with_context(|| format!("cannot lock {}", path.display()))
            }
        }
    }

    /// Unlocks, and removes the lock file if this lock created it: for a directory refused as
    /// someone else's, which should be left as it was found.
    fn discard(&self) {
        let _ = self.file.unlock();
        if let Some(path) = &self.created {
            let _ = fs::remove_file(path);
        }
    }
}

/// Locks the output directory ([`RunLock`]), refuses one that holds another configuration's
/// run, and records ours. Removes the temporaries of writes a kill interrupted. A run that
/// differs only in `[eval]` (which training does not read) is the same run: its `run.toml` is
/// updated and the stages re-evaluate.
pub fn guard(cfg: &Config, out: &Path) -> Result<RunLock> {
    fs::create_dir_all(out)
        .with_context(|| format!("cannot create output directory {}", out.display()))?;
    let lock = RunLock::acquire(out)?;
    for stale in deltaplan_stdx::fs::remove_stale_tmp(out)
        .with_context(|| format!("cannot clean up {}", out.display()))?
    {
        tracing::info!("removed {} (left by an interrupted write)", stale.display());
    }
    let marker = out.join("run.toml");
    let ours = cfg.to_toml();
    let recorded: Result<()> = match fs::read_to_string(&marker) {
        Ok(theirs) if theirs == ours => Ok(()),
        Ok(theirs) => {
            let same_training = toml::from_str::<Config>(&theirs).is_ok_and(|t| {
                Config {
                    eval: cfg.eval.clone(),
                    ..t
                } == *cfg
            });
            if !same_training {
                bail!(
                    "output directory {} holds another run's files (its run.toml differs from this configuration): \
                     choose a new --out, or pass the same --config/--set/--seed as that run to resume it",
                    out.display()
                );
            }
            tracing::info!(
                "[eval] settings changed: the evaluations will be redone, training is kept"
            );
            write_file(&marker, ours.as_bytes())
        }
        Err(_) => {
            // Temporaries were removed above; a directory holding only them is empty.
            let foreign = fs::read_dir(out)?
                .filter_map(|e| e.ok())
                .any(|e| !deltaplan_stdx::fs::is_tmp(&e.path()) && e.file_name() != RUN_LOCK);
            if foreign && !dataset_path(out).exists() {
                lock.discard();
                bail!(
                    "output directory {} is not empty and is not a deltaplan run: choose an empty or new --out",
                    out.display()
                );
            }
            // Files already here (a run.toml lost) are adopted only if they carry this
            // configuration: each stage checks the one it owns before using it, and the
            // recording is checked here so that another run's directory is not marked ours.
            if let Ok(ds) = Dataset::load(out) {
                if ds.config != cfg.recording() {
                    bail!(
                        "{} was recorded with another configuration ({}): choose a new --out, or pass that run's --config/--set/--seed",
                        dataset_path(out).display(),
                        recording_difference(&ds.config, &cfg.recording())
                    );
                }
            }
            write_file(&marker, ours.as_bytes())
        }
    };
    recorded.map(|()| lock)
}

/// What loading an existing stage output showed.
enum Existing<T> {
    /// Nothing there.
    Missing,
    /// It loads and was made by this configuration.
    Ours(T),
    /// It does not load (truncated, damaged): the stage rebuilds it.
    Unreadable(String),
}

/// Classifies the result of loading an existing output at `path`: an I/O error (permissions)
/// is returned, a file that does not parse is [`Existing::Unreadable`].
fn existing<T>(path: &Path, loaded: deltaplan_learn::Result<T>) -> Result<Existing<T>> {
    use deltaplan_learn::LearnError as E;
    if !path.exists() {
        return Ok(Existing::Missing);
    }
    match loaded {
        Ok(t) => Ok(Existing::Ours(t)),
        Err(e @ E::Io { .. }) => Err(e.into()),
        Err(e) => Ok(Existing::Unreadable(e.to_string())),
    }
}

pub fn record(cfg: &Config, out: &Path) -> Result<()> {
    let path = dataset_path(out);
    match existing(&path, Dataset::load(out))? {
        Existing::Ours(ds) if ds.config == cfg.recording() => {
            tracing::info!("demonstrations already recorded: {}", path.display());
            return Ok(());
        }
        Existing::Ours(ds) => bail!(
            "{} was recorded with another configuration ({}): choose a new --out, or pass that run's --config/--set/--seed",
            path.display(),
            recording_difference(&ds.config, &cfg.recording())
        ),
        Existing::Unreadable(why) => {
            tracing::warn!("{why}; recording it again");
        }
        Existing::Missing => {}
    }
    let t = Instant::now();
    let ds = match cfg.train_scenarios.world {
        TrainWorld::Builtin => {
            let pb = bar(cfg.demos.steps as u64, "record");
            let ds = record_demonstrations(&cfg.recording(), |step| pb.set_position(step as u64))?;
            pb.finish_and_clear();
            ds
        }
        TrainWorld::Sumo => {
            let pb = bar((cfg.demos.n_envs * cfg.demos.steps) as u64, "record");
            let ds = sumo_world::record_demonstrations(&cfg.recording(), out, &|| pb.inc(1))?;
            pb.finish_and_clear();
            ds
        }
    };
    ds.save(out)?;
    timings::charge(out, "record", t.elapsed().as_secs_f64())?;
    tracing::info!(
        "recorded {} expert samples in {:.1} s -> {}",
        ds.n_samples(),
        t.elapsed().as_secs_f64(),
        path.display()
    );
    Ok(())
}

/// The first difference between two recordings' settings, for messages.
fn recording_difference(
    theirs: &deltaplan_learn::dataset::Recording,
    ours: &deltaplan_learn::dataset::Recording,
) -> String {
    if theirs.seed != ours.seed {
        format!("seed {}, this run has seed {}", theirs.seed, ours.seed)
    } else if theirs.sim != ours.sim {
        "another [sim]".into()
    } else if theirs.scenarios != ours.scenarios {
        "other [train_scenarios]".into()
    } else {
        "other [demos] settings".into()
    }
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
    if let Some(why) = sft_mismatch(cfg, &p) {
        bail!(
            "{}: {why}: choose a new --out, or pass that run's --config/--set/--seed",
            path.display()
        );
    }
    Ok(p)
}

/// The file of the run's frozen planner: the configured ONNX planner, or `sft.safetensors`.
fn frozen_path(cfg: &Config, out: &Path) -> PathBuf {
    cfg.planner.clone().unwrap_or_else(|| sft_path(out))
}

/// The run's frozen planner: the configured ONNX planner, or the built-in SFT checkpoint.
pub fn load_frozen(cfg: &Config, out: &Path) -> Result<Frozen> {
    match &cfg.planner {
        // Another run's built-in SFT planner (as its own run would load it, less the check
        // that it was trained with this run's settings: it is given, like an ONNX planner).
        Some(path) if path.extension().is_some_and(|e| e == "safetensors") => {
            let p = SftPlanner::load_expecting(path, OBS_DIM)?;
            p.check_compatible(&cfg.sim)?;
            tracing::info!(
                "frozen planner: {} (built-in SFT, weights {}...)",
                path.display(),
                &FrozenPlanner::weights_hash(&p)[..12]
            );
            Ok(Frozen::Sft(p))
        }
        Some(path) => {
            let p = OnnxPlanner::load(path, &cfg.sim)?;
            tracing::info!(
                "frozen planner: {} (ONNX, {} waypoints, embedding {}, weights {}...)",
                path.display(),
                p.horizon(),
                p.embedding_dim(),
                &p.weights_hash()[..12]
            );
            Ok(Frozen::Onnx(p))
        }
        None => Ok(Frozen::Sft(load_sft(cfg, out)?)),
    }
}

/// The difference between the SFT planner's recorded training settings and this run's, if any.
fn sft_mismatch(cfg: &Config, p: &SftPlanner) -> Option<String> {
    let seed = p.info.get("seed").and_then(|v| v.as_u64());
    if seed != Some(cfg.stage_seed()) {
        return Some(format!(
            "it was trained with seed {}, this run has seed {}",
            seed.map_or("?".into(), |s| s.to_string()),
            cfg.stage_seed()
        ));
    }
    let trained: Option<sft::SftTrainConfig> = p
        .info
        .get("train_config")
        .and_then(|v| serde_json::from_value(v.clone()).ok());
    (trained.as_ref() != Some(&cfg.sft)).then(|| "it was trained with other [sft] settings".into())
}

pub fn train_sft(cfg: &Config, out: &Path) -> Result<()> {
    let path = sft_path(out);
    let report_path = out.join("sft_report.json");
    match existing(&path, SftPlanner::load_expecting(&path, OBS_DIM))? {
        Existing::Ours(p) => {
            if let Some(why) = sft_mismatch(cfg, &p) {
                bail!(
                    "{}: {why}: choose a new --out, or pass that run's --config/--set/--seed",
                    path.display()
                );
            }
            if !report_path.exists() {
                // The report is written before the checkpoint; a directory of an older
                // version may still lack it: rebuild it from the checkpoint's copy.
                if let Some(report) = p.info.get("report") {
                    tracing::warn!(
                        "{} is missing: rewriting it from {}",
                        report_path.display(),
                        path.display()
                    );
                    write_file(
                        &report_path,
                        serde_json::to_string_pretty(report)?.as_bytes(),
                    )?;
                }
            }
            tracing::info!("SFT planner already trained: {}", path.display());
            return Ok(());
        }
        Existing::Unreadable(why) => tracing::warn!("{why}; training it again"),
        Existing::Missing => {}
    }
    let ds =
        Dataset::load(out).context("the SFT planner is trained on the recorded demonstrations")?;
    if ds.config != cfg.recording() {
        bail!(
            "{} was recorded with another configuration ({}): run `deltaplan record` with this run's --out and configuration",
            dataset_path(out).display(),
            recording_difference(&ds.config, &cfg.recording())
        );
    }
    let t = Instant::now();
    let pb = bar(cfg.sft.epochs as u64, "train-sft");
    let (mut planner, report) = sft::train_sft(&cfg.sft, &ds, cfg.stage_seed(), |e| {
        pb.set_position(e.epoch as u64);
        pb.set_message(format!("val ADE {:.3} m FDE {:.3} m", e.val_ade, e.val_fde));
    })?;
    pb.finish_and_clear();
    // The report first: a kill before the checkpoint's rename retrains and rewrites it.
    write_file(
        &report_path,
        serde_json::to_string_pretty(&report)?.as_bytes(),
    )?;
    if let Some(info) = planner.info.as_object_mut() {
        info.insert("report".into(), serde_json::to_value(&report)?);
    }
    planner.save(&path)?;
    timings::charge(out, "train-sft", t.elapsed().as_secs_f64())?;
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
    refine_with(cfg, out, &load_frozen(cfg, out)?)
}

/// [`refine`] of a frozen planner given by the caller (the Python package's planners) instead
/// of the run's own (`sft.safetensors` or the configured ONNX file): same files, same resume.
/// With `train_scenarios.world = "sumo"` the worlds are SUMO's, on its training networks.
pub fn refine_with<P: FrozenPlanner>(cfg: &Config, out: &Path, sft: &P) -> Result<()> {
    match cfg.train_scenarios.world {
        TrainWorld::Builtin => drive_refinement(cfg, out, sft, |learner, state| {
            let l = &learner;
            let env = refine::planner_env(&l.scenarios, l.sim, 0..l.cfg.num_envs, l.seed, sft)?;
            Ok(Refiner::from_learner(learner, sft, env, state)?)
        }),
        TrainWorld::Sumo => {
            if sft.bev_observation().is_some() {
                bail!(
                    "the SUMO world does not draw BEV rasters yet: refine this raster planner in \
                     the built-in world (train_scenarios.world = \"builtin\")"
                );
            }
            drive_refinement(cfg, out, sft, |learner, state| {
                let env = sumo_world::training_env(cfg, out, learner.seed)?;
                Ok(Refiner::from_learner(learner, sft, env, state)?)
            })
        }
    }
}

/// [`refine`] with the rollouts collected by `workers` (the Python package's Ray actors, each
/// holding a range of the worlds): same files, same resume, and the same bits as one process
/// for the same seed and the learner's thread count. A checkpoint of either kind resumes the
/// other.
pub fn refine_distributed<W: Workers>(cfg: &Config, out: &Path, mut workers: W) -> Result<()> {
    if cfg.train_scenarios.world != TrainWorld::Builtin {
        bail!(
            "distributed workers run the built-in world only: refine in SUMO in one process \
             (deltaplan refine with train_scenarios.world = \"sumo\")"
        );
    }
    let frozen = load_frozen(cfg, out)?;
    drive_refinement(cfg, out, &frozen, |learner, state| {
        if let Some((snap, running_return)) = state {
            workers.restore(&distributed::encode_env(snap, running_return)?)?;
        }
        Ok(DistributedRefiner::new(learner, workers))
    })
}

/// The refine stage around any [`Refinement`] that `build` makes from a fresh or resumed
/// learner (and, resumed, the worlds' snapshot and running returns): resume, the metrics file,
/// checkpoints, Ctrl-C, the progress bar.
fn drive_refinement<P: FrozenPlanner, R: Refinement>(
    cfg: &Config,
    out: &Path,
    sft: &P,
    build: impl FnOnce(Learner, Option<(&EnvSnapshot, &[f32])>) -> Result<R>,
) -> Result<()> {
    let path = rl_path(out);
    let metrics_path = out.join("metrics.jsonl");
    let resumed = match existing(&path, Learner::resume(&path, sft))? {
        Existing::Ours(r) => {
            let l = &r.0;
            if l.cfg != cfg.refine
                || l.sim != cfg.sim
                || l.scenarios != cfg.train_scenarios
                || l.seed != cfg.stage_seed()
            {
                bail!(
                    "{} was written with another [refine], [sim], [train_scenarios] or seed: use the same configuration, or a new --out",
                    path.display()
                );
            }
            tracing::info!(
                "resuming refinement at iteration {}/{}",
                l.iteration,
                l.cfg.iterations
            );
            Some(r)
        }
        Existing::Unreadable(why) if why.contains("trained on another SFT planner") => {
            bail!("{why}")
        }
        Existing::Unreadable(why) => {
            tracing::warn!("{why}; starting the refinement again from iteration 0");
            None
        }
        Existing::Missing => None,
    };
    let mut saved = resumed.as_ref().map(|r| r.0.iteration);
    let mut r = match resumed {
        Some((learner, snap, running_return)) => build(learner, Some((&snap, &running_return)))?,
        None => build(
            Learner::new(
                cfg.refine.clone(),
                cfg.sim,
                cfg.train_scenarios.clone(),
                sft,
                cfg.stage_seed(),
            )?,
            None,
        )?,
    };
    // Keep the metrics of the iterations the checkpoint holds, each once and in order; drop
    // torn lines and any written after the checkpoint.
    let mut next = 1;
    let kept: Vec<String> = fs::read_to_string(&metrics_path)
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            let keep = serde_json::from_str::<IterationStats>(l)
                .is_ok_and(|s| s.iteration == next && s.iteration <= r.learner().iteration);
            next += usize::from(keep);
            keep
        })
        .map(str::to_string)
        .collect();
    if kept.len() != r.learner().iteration {
        tracing::warn!(
            "{} holds the lines of {} of the {} iterations {} covers (edited or removed): continuing without the missing ones",
            metrics_path.display(),
            kept.len(),
            r.learner().iteration,
            path.display()
        );
    }
    let mut text = kept.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    write_file(&metrics_path, text.as_bytes())?;
    if r.learner().done() {
        tracing::info!("refinement already complete: {}", path.display());
        return Ok(());
    }
    let mut metrics = fs::OpenOptions::new().append(true).open(&metrics_path)?;
    let started = Instant::now();
    let pb = bar(r.learner().cfg.iterations as u64, "refine");
    pb.set_position(r.learner().iteration as u64);
    REFINING.store(true, Ordering::SeqCst);
    let last_good = |saved: Option<usize>| match saved {
        Some(i) => format!(
            "the last good checkpoint is {} (iteration {i})",
            path.display()
        ),
        None => format!(
            "no refinement checkpoint was written ({} does not exist)",
            path.display()
        ),
    };
    let result = (|| -> Result<()> {
        while !r.learner().done() {
            let mut s = match r.iterate() {
                Ok(s) => s,
                Err(e @ deltaplan_learn::LearnError::NonFinite { .. }) => bail!(
                    "refinement stopped before a bad update: {e}; nothing of it was saved and {}. \
                     Lower refine.ppo.learning_rate, refine.reward_scale or refine.max_delta, or fix the planner or environment that produced it",
                    last_good(saved)
                ),
                Err(e @ deltaplan_learn::LearnError::Workers(_)) => bail!(
                    "refinement stopped: {e}; {}. Run the same command again to resume from it \
                     (with workers for the same configuration)",
                    last_good(saved)
                ),
                Err(e) => return Err(e.into()),
            };
            if !s.policy_loss.is_finite() || !s.value_loss.is_finite() {
                bail!(
                    "refinement diverged at iteration {} (policy loss {}, value loss {}): lower refine.ppo.learning_rate or refine.max_delta; {}",
                    s.iteration, s.policy_loss, s.value_loss, last_good(saved)
                );
            }
            // Policy selection: the refined planner as it stands drives the validation suite.
            if r.learner().validates_now() {
                let t = Instant::now();
                let l = r.learner();
                let ramp = l.policy_ramp();
                let score = validation_score(sft, l, ramp)?;
                r.learner_mut().offer(score, ramp);
                s.validation_driving_score = Some(score);
                s.seconds.validation = t.elapsed().as_secs_f64();
            }
            // Checkpoint every `checkpoint_every` iterations, at the end, and on Ctrl-C. The
            // metrics line is appended first and fsynced before the checkpoint, so a checkpoint
            // never covers an iteration whose line could be lost; a resumed run drops the
            // lines written after its checkpoint.
            writeln!(metrics, "{}", serde_json::to_string(&s)?)?;
            deltaplan_stdx::fault::point(|| "refine:appended".into());
            let stopping = STOP.load(Ordering::SeqCst);
            if r.learner().done()
                || stopping
                || s.iteration.is_multiple_of(cfg.checkpoint_every.max(1))
            {
                metrics
                    .sync_data()
                    .with_context(|| format!("cannot write {}", metrics_path.display()))?;
                r.save(&path)?;
                saved = Some(r.learner().iteration);
            }
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
    timings::charge(out, "refine", started.elapsed().as_secs_f64())?;
    result?;
    tracing::info!(
        "refinement done: {} iterations, {} env steps -> {}",
        r.learner().iteration,
        r.learner().env_steps,
        path.display()
    );
    if let Some(sel) = r.learner().selection() {
        tracing::info!(
            "the refined planner is iteration {}'s policy: the best validation driving score, {:.2}",
            sel.iteration,
            sel.score
        );
    }
    Ok(())
}

/// Mean driving score of the refined planner (`sft` plus the learner's residual at `ramp`) on
/// the learner's validation suite (`TrainScenarios::validation_suite`).
fn validation_score<P: FrozenPlanner>(sft: &P, l: &Learner, ramp: f32) -> Result<f32> {
    let specs = l.scenarios.validation_suite(l.cfg.validation_per_family);
    let mut rp = ResidualPlanner::new(sft, &l.ppo.ac, ramp);
    let planner = |obs: &[f32], plans: &mut [f32]| rp.plan(obs, plans).map_err(PlannerError::new);
    let episodes = drive_with(planner, sft.bev_observation(), |d| {
        Ok(closed_loop(l.sim, &specs, d)?)
    })?;
    let sum: f64 = episodes.iter().map(|e| f64::from(e.driving_score())).sum();
    Ok((sum / episodes.len() as f64) as f32)
}

/// Scenario `index` of `family` in the split's evaluation suite; errors name the fix.
fn suite_scenario(cfg: &Config, split: Split, family: &str, index: usize) -> Result<ScenarioSpec> {
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
    suite(cfg, split)
        .into_iter()
        .filter(|s| s.family == fam)
        .nth(index)
        .context("scenario not in suite")
}

fn suite(cfg: &Config, split: Split) -> Vec<ScenarioSpec> {
    split.suite(&Family::ALL, cfg.eval.per_family, cfg.eval.difficulty)
}

/// Runs `f` with a [`Driver`] for `policy` (loading the networks it needs).
pub fn with_driver<T>(
    cfg: &Config,
    out: &Path,
    policy: Policy,
    f: impl FnOnce(&mut Driver) -> Result<T>,
) -> Result<T> {
    match policy {
        Policy::Expert => f(&mut Driver::Expert),
        Policy::Sft => {
            let frozen = load_frozen(cfg, out)?;
            let mut ws = FrozenWorkspace::default();
            let (mut z, zd) = (Vec::new(), frozen.embedding_dim());
            let od = frozen.obs_dim();
            let planner = |obs: &[f32], plans: &mut [f32]| {
                z.resize(obs.len() / od * zd, 0.0);
                frozen
                    .plan_batch(obs, &mut ws, plans, &mut z)
                    .map_err(PlannerError::new)
            };
            drive_with(planner, frozen.bev_observation(), f)
        }
        Policy::Rl => {
            let sft = load_frozen(cfg, out)?;
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
            let planner =
                |obs: &[f32], plans: &mut [f32]| rp.plan(obs, plans).map_err(PlannerError::new);
            drive_with(planner, sft.bev_observation(), f)
        }
    }
}

/// Runs `f` with `planner` as the driver, its observations carrying `raster` if it reads one.
fn drive_with<T>(
    mut planner: impl Planner,
    raster: Option<BevSpec>,
    f: impl FnOnce(&mut Driver) -> Result<T>,
) -> Result<T> {
    match raster {
        Some(raster) => f(&mut Driver::Planner(&mut WithRaster { planner, raster })),
        None => f(&mut Driver::Planner(&mut planner)),
    }
}

fn eval_path(out: &Path, policy: Policy, split: Split) -> PathBuf {
    out.join("eval")
        .join(format!("{}_{}.json", split.name(), policy.name()))
}

/// Beside each evaluation file: the key of what made it (the evaluation settings, the
/// simulator and the bytes of the checkpoints the policy reads). Written after the evaluation
/// file and removed before it is rewritten, so a key never vouches for another file.
fn eval_key_path(out: &Path, policy: Policy, split: Split) -> PathBuf {
    eval_path(out, policy, split).with_extension("key")
}

fn eval_key(cfg: &Config, out: &Path, policy: Policy, split: Split) -> Result<String> {
    let mut h = Sha256::new();
    h.update(format!("{} {} ", policy.name(), split.name()));
    h.update(toml::to_string(&cfg.sim)?);
    h.update(format!("{} {:?}", cfg.eval.per_family, cfg.eval.difficulty));
    let frozen = frozen_path(cfg, out);
    let inputs: &[PathBuf] = match policy {
        Policy::Expert => &[],
        Policy::Sft => &[frozen],
        Policy::Rl => &[frozen, rl_path(out)],
    };
    for p in inputs {
        let bytes = fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
        h.update(Sha256::digest(&bytes));
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// The directory of an evaluation's files in the field's formats: `eval/<split>/<policy>/`.
fn field_formats_dir(out: &Path, policy: Policy, split: Split) -> PathBuf {
    out.join("eval").join(split.name()).join(policy.name())
}

/// Writes the evaluation's CARLA Leaderboard results and nuPlan table (derived from its
/// episodes, so they are written before the key that vouches for the evaluation).
fn write_field_formats(
    cfg: &Config,
    out: &Path,
    policy: Policy,
    split: Split,
    episodes: &[EpisodeStats],
) -> Result<()> {
    let run = FieldRun {
        split,
        policy,
        episodes,
        dt: cfg.sim.dt,
    };
    let dir = field_formats_dir(out, policy, split);
    formats::write_field_formats(&dir, &run)
        .with_context(|| format!("cannot write the field's formats into {}", dir.display()))?;
    Ok(())
}

/// Evaluates `policy` on `split` unless its evaluation file is there and its key says this
/// configuration and these checkpoints made it (then only the field's formats are written,
/// if a directory made before they existed lacks them).
fn ensure_evaluated(cfg: &Config, out: &Path, policy: Policy, split: Split) -> Result<PathBuf> {
    let path = eval_path(out, policy, split);
    let key = fs::read_to_string(eval_key_path(out, policy, split)).ok();
    if path.exists() && key.as_deref() == Some(eval_key(cfg, out, policy, split)?.as_str()) {
        if !FieldFiles::in_dir(&field_formats_dir(out, policy, split)).exist() {
            write_field_formats(cfg, out, policy, split, &load_eval(&path)?)?;
        }
        return Ok(path);
    }
    evaluate(cfg, out, policy, split)
}

pub fn evaluate(cfg: &Config, out: &Path, policy: Policy, split: Split) -> Result<PathBuf> {
    let specs = suite(cfg, split);
    let t = Instant::now();
    let episodes = with_driver(cfg, out, policy, |d| Ok(closed_loop(cfg.sim, &specs, d)?))?;
    let path = eval_path(out, policy, split);
    let key_path = eval_key_path(out, policy, split);
    match fs::remove_file(&key_path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("cannot remove {}", key_path.display()))
        }
        _ => {}
    }
    write_file(&path, serde_json::to_string(&episodes)?.as_bytes())?;
    write_field_formats(cfg, out, policy, split, &episodes)?;
    write_file(&key_path, eval_key(cfg, out, policy, split)?.as_bytes())?;
    timings::charge(out, "evaluate", t.elapsed().as_secs_f64())?;
    let s = deltaplan_eval::summarize(&episodes).overall;
    tracing::info!(
        "{} on {}: driving score {:.1}, route completion {:.1}, failures {:.1}% ({} episodes, {:.1} s)",
        policy.name(),
        split.name(),
        s[Metric::DrivingScore].mean,
        s[Metric::RouteCompletion].mean,
        100.0 * s[Metric::FailureRate].mean,
        episodes.len(),
        t.elapsed().as_secs_f64()
    );
    Ok(path)
}

/// Evaluates `ego` on `split` in SUMO ([`sumo_eval`]): one of the run's policies, loaded as
/// for the built-in world, or SUMO's own driver model; on `maps` (`resco:NAME`, `carla:TOWN`)
/// or, with none, the held-out generated networks, whose evaluation file is then vouched for
/// by a key as the built-in world's are ([`ensure_evaluated_in_sumo`]).
pub fn evaluate_in_sumo(
    cfg: &Config,
    out: &Path,
    ego: SumoEgo,
    split: Split,
    maps: &[String],
) -> Result<PathBuf> {
    let t = Instant::now();
    let key_path = sumo_eval::eval_path(out, ego, split, maps)?.with_extension("key");
    match fs::remove_file(&key_path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("cannot remove {}", key_path.display()))
        }
        _ => {}
    }
    let path = match ego {
        SumoEgo::Policy(policy) => with_driver(cfg, out, policy, |d| {
            sumo_eval::evaluate_policy(cfg, out, policy, d, split, maps)
        })?,
        SumoEgo::SumoDriver => sumo_eval::evaluate_sumo_driver(cfg, out, split, maps)?,
    };
    if maps.is_empty() {
        write_file(&key_path, sumo_eval_key(cfg, out, ego, split)?.as_bytes())?;
    }
    timings::charge(out, "evaluate", t.elapsed().as_secs_f64())?;
    Ok(path)
}

/// The key of a SUMO evaluation on the held-out generated networks: the built-in key of the
/// checkpoints it reads, the driver, the networks and SUMO's settings.
fn sumo_eval_key(cfg: &Config, out: &Path, ego: SumoEgo, split: Split) -> Result<String> {
    let reads = match ego {
        SumoEgo::Policy(policy) => policy,
        // No checkpoint: as the expert.
        SumoEgo::SumoDriver => Policy::Expert,
    };
    let mut h = Sha256::new();
    h.update(eval_key(cfg, out, reads, split)?);
    h.update(format!(
        " sumo {} {:?} {:?} {:?}",
        ego.name(),
        sumo_world::EVAL_NETWORKS,
        deltaplan_sumo::SumoConfig::default(),
        deltaplan_sumo::SUMO_DRIVER
    ));
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Evaluates `ego` on `split` in SUMO on the held-out generated networks unless its file is
/// there and its key says this configuration and these checkpoints made it.
fn ensure_evaluated_in_sumo(
    cfg: &Config,
    out: &Path,
    ego: SumoEgo,
    split: Split,
) -> Result<PathBuf> {
    let path = sumo_eval::eval_path(out, ego, split, &[])?;
    let key = fs::read_to_string(path.with_extension("key")).ok();
    if path.exists() && key.as_deref() == Some(sumo_eval_key(cfg, out, ego, split)?.as_str()) {
        return Ok(path);
    }
    evaluate_in_sumo(cfg, out, ego, split, &[])
}

/// Who stands for `policy` in the report of a run trained in `world`: in SUMO, the expert is
/// SUMO's own driver model (the demonstrator, whose labels the open-loop errors measure
/// against).
fn report_ego(world: TrainWorld, policy: Policy) -> Option<SumoEgo> {
    match (world, policy) {
        (TrainWorld::Builtin, _) => None,
        (TrainWorld::Sumo, Policy::Expert) => Some(SumoEgo::SumoDriver),
        (TrainWorld::Sumo, p) => Some(SumoEgo::Policy(p)),
    }
}

/// The evaluation file of `policy` on `split` the report reads, evaluated if missing or stale:
/// in the world the run trained in.
fn ensure_report_evaluation(
    cfg: &Config,
    out: &Path,
    policy: Policy,
    split: Split,
) -> Result<PathBuf> {
    match report_ego(cfg.train_scenarios.world, policy) {
        None => ensure_evaluated(cfg, out, policy, split),
        Some(ego) => ensure_evaluated_in_sumo(cfg, out, ego, split),
    }
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

/// Prints the paired differences B - A of `metrics` (every metric when empty).
pub fn compare(a: &Path, b: &Path, metrics: &[Metric]) -> Result<()> {
    let (ea, eb) = (load_eval(a)?, load_eval(b)?);
    let d = deltaplan_eval::paired_differences(&ea, &eb)?;
    println!(
        "paired difference B - A over {} scenarios (95% bootstrap CI)",
        ea.len()
    );
    let chosen = if metrics.is_empty() {
        &Metric::ALL[..]
    } else {
        metrics
    };
    for &m in chosen {
        let e = d[m];
        println!(
            "{:>20}: {:+9.3} [{:+9.3}, {:+9.3}]",
            m.name(),
            e.mean,
            e.lo,
            e.hi
        );
    }
    Ok(())
}

/// Renders evaluation episode `index` of `family` on `split` for every policy in `policies`,
/// at one crop (see [`render_comparison`]), and prints the files.
pub fn render(
    cfg: &Config,
    out: &Path,
    policies: &[Policy],
    split: Split,
    family: &str,
    index: usize,
) -> Result<()> {
    let spec = suite_scenario(cfg, split, family, index)?;
    let (example, outcomes) = render_comparison(cfg, out, split, spec, policies)?;
    for line in outcomes {
        println!("{line}");
    }
    for file in example.files() {
        println!("{}", out.join(file).display());
    }
    Ok(())
}

/// Renders `spec` for every policy at one crop and scale: one picture per policy, and with two
/// or more policies a filmstrip around the step where they first diverge and their speed and
/// acceleration; returns the report's example (files relative to `out`) and a line per
/// policy saying how its episode ended. The report and `deltaplan render` both call this, so
/// the command the report prints writes the same files.
fn render_comparison(
    cfg: &Config,
    out: &Path,
    split: Split,
    spec: ScenarioSpec,
    policies: &[Policy],
) -> Result<(Example, Vec<String>)> {
    let seed = spec.seed - split.seed_base();
    let family = spec.family.name();
    let id = format!("{}_{family}_{seed}", split.name());
    let index = suite(cfg, split)
        .iter()
        .filter(|s| s.family == spec.family)
        .position(|s| s.seed == spec.seed)
        .context("scenario not in suite")?;
    let traces = policies
        .iter()
        .map(|&p| with_driver(cfg, out, p, |d| Ok(trace_episode(cfg.sim, spec, d)?)))
        .collect::<Result<Vec<_>>>()?;
    let comparison = Comparison::new(&traces.iter().collect::<Vec<_>>());
    let dir = Path::new("figures").join("episodes");
    let mut rendered = Vec::new();
    let mut images = Vec::new();
    let mut outcomes = Vec::new();
    for &p in policies {
        let title = format!("{} {id}", p.name().to_uppercase());
        let r = with_driver(cfg, out, p, |d| {
            Ok(render_episode(cfg.sim, spec, d, &title, &comparison)?)
        })?;
        let file = dir.join(format!("{id}_{}.svg", p.name()));
        write_file(&out.join(&file), r.picture.as_bytes())?;
        let outcome = format!(
            "{} ({:?}, route completion {:.0}%, driving score {:.1})",
            p.name().to_uppercase(),
            r.stats.end,
            r.stats.route_completion,
            r.stats.driving_score()
        );
        outcomes.push(outcome.clone());
        images.push((outcome, file.display().to_string()));
        rendered.push(r);
    }
    let (mut filmstrip, mut motion) = (None, None);
    if policies.len() >= 2 {
        let rows: Vec<Row<_>> = policies
            .iter()
            .zip(&rendered)
            .map(|(p, r)| Row {
                name: p.name(),
                colour: p.colour(),
                data: r,
            })
            .collect();
        let file = dir.join(format!("{id}_filmstrip.svg"));
        let svg = filmstrip_svg(&id, &rows, &comparison, cfg.sim.dt);
        write_file(&out.join(&file), svg.as_bytes())?;
        filmstrip = Some(file.display().to_string());
        let rows: Vec<Row<_>> = policies
            .iter()
            .zip(&traces)
            .map(|(p, t)| Row {
                name: p.name(),
                colour: p.colour(),
                data: t,
            })
            .collect();
        let divergence_time = comparison.divergence.map(|k| k as f32 * cfg.sim.dt);
        let file = dir.join(format!("{id}_motion.svg"));
        write_file(
            &out.join(&file),
            motion_svg(&id, &rows, divergence_time).as_bytes(),
        )?;
        motion = Some(file.display().to_string());
    }
    let policy_args: Vec<String> = policies
        .iter()
        .map(|p| format!("--policy {}", p.name()))
        .collect();
    let command = format!(
        "deltaplan render --config {} --out {} --split {} --family {family} --index {index} {}",
        out.join("run.toml").display(),
        out.display(),
        split.name(),
        policy_args.join(" ")
    );
    let example = Example {
        id,
        title: format!(
            "{family} scenario, seed {seed} of the {} split (index {index})",
            split.name()
        ),
        images,
        filmstrip,
        motion,
        command,
    };
    Ok((example, outcomes))
}

/// The BEV raster of an evaluation scenario after the expert has driven it for `step` steps
/// (or to the end of its episode), as a PNG in `OUT/figures/bev/` (spec: `demos.bev`, or the
/// default). Needs no other file of the run.
pub fn render_bev(
    cfg: &Config,
    out: &Path,
    split: Split,
    family: &str,
    index: usize,
    step: usize,
) -> Result<PathBuf> {
    let spec = suite_scenario(cfg, split, family, index)?;
    let bev_spec = cfg.demos.bev.unwrap_or_default();
    let mut world = World::new(cfg.sim);
    world.reset(spec);
    let mut plan = vec![0.0; cfg.sim.action_dim()];
    let mut driven = 0;
    while driven < step {
        expert_plan(&world, &mut plan);
        if world.step(&plan).end != EndReason::Running {
            break;
        }
        driven += 1;
    }
    let mut raster = vec![0u8; bev_spec.len()];
    deltaplan_sim::bev::render(&world, &bev_spec, &mut raster);
    let png = crate::bev_image::bev_png(&bev_spec, &raster)?;
    let dir = out.join("figures").join("bev");
    fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{}_{family}_{index}_t{driven}.png", split.name()));
    write_file(&path, &png)?;
    if driven < step {
        tracing::info!("the episode ended after {driven} steps: rendered its last state");
    }
    Ok(path)
}

/// Open-loop errors of the learned planners against the expert.
struct OpenLoopErrors {
    sft: DisplacementError,
    rl: DisplacementError,
}

/// Open-loop ADE/FDE of the SFT and refined planners against the expert on the held-out
/// demonstrations (the SFT validation episodes); undefined (NaN) for a given planner (an ONNX
/// file or another run's `sft.safetensors`), whose run records no demonstrations.
fn open_loop_errors(
    cfg: &Config,
    out: &Path,
    frozen: &Frozen,
    refined: &LoadedPolicy,
) -> Result<OpenLoopErrors> {
    let (Frozen::Sft(sft), None) = (frozen, &cfg.planner) else {
        let undefined = DisplacementError {
            ade: f64::NAN,
            fde: f64::NAN,
        };
        return Ok(OpenLoopErrors {
            sft: undefined,
            rl: undefined,
        });
    };
    let ds = Dataset::load(out)?;
    let (_, val) = ds.split(cfg.sft.val_fraction, cfg.stage_seed())?;
    let mut ws = SftWorkspace::new();
    let s = sft::evaluate(sft, &ds, &val, cfg.sft.loss, &mut ws)?;
    let mut rp = ResidualPlanner::new(sft, &refined.ac, refined.ramp);
    let a = sft.action_dim();
    let mut rl = DisplacementSums::default();
    let mut obs = Vec::new();
    let mut plans = Vec::new();
    for chunk in val.chunks(1024) {
        obs.clear();
        chunk
            .iter()
            .for_each(|&k| obs.extend_from_slice(ds.obs_row(k)));
        plans.resize(chunk.len() * a, 0.0);
        rp.plan(&obs, &mut plans)?;
        for (plan, &k) in plans.chunks_exact(a).zip(chunk) {
            rl.add(plan, ds.action_row(k));
        }
    }
    Ok(OpenLoopErrors {
        sft: DisplacementError {
            ade: f64::from(s.ade),
            fde: f64::from(s.fde),
        },
        rl: rl.mean(),
    })
}

/// The splits the report evaluates on, in report order.
const REPORT_SPLITS: [Split; 2] = [Split::Eval, Split::Hard];

/// Writes the report (evaluating what is missing) and returns it with the path of report.md.
pub fn report(cfg: &Config, out: &Path, wall: Option<Duration>) -> Result<(PathBuf, Report)> {
    let started = Instant::now();
    let sft = load_frozen(cfg, out)?;
    let refined = load_policy(&rl_path(out), &sft)?;
    let errors = open_loop_errors(cfg, out, &sft, &refined)?;
    let mut splits = Vec::new();
    for split in REPORT_SPLITS {
        let run = |policy: Policy, open_loop: DisplacementError| -> Result<PolicyRun> {
            let path = ensure_report_evaluation(cfg, out, policy, split)?;
            Ok(PolicyRun {
                episodes: load_eval(&path)?,
                open_loop,
            })
        };
        splits.push(SplitRun {
            name: split.name().into(),
            // The expert is the reference of the open-loop errors: zero by definition.
            expert: run(Policy::Expert, DisplacementError::default())?,
            sft: run(Policy::Sft, errors.sft)?,
            rl: run(Policy::Rl, errors.rl)?,
        });
    }
    // The examples are drawn by the built-in world's renderer.
    let examples = match cfg.train_scenarios.world {
        TrainWorld::Builtin => render_examples(cfg, out, &splits[0])?,
        TrainWorld::Sumo => Vec::new(),
    };
    let curve = learning_curve(out);
    let actor_start = actor_start(out);
    // From the evaluated checkpoint: the curve skips iterations in which no episode ended.
    let env_steps = refined.env_steps;
    let wall_seconds = match wall {
        Some(w) => w.as_secs_f64(),
        None => previous_wall_seconds(out),
    };
    // This report's own time is charged before it is written, so the table includes it.
    timings::charge(out, "report", started.elapsed().as_secs_f64())?;
    let input = ReportInput {
        splits,
        curve,
        wall_seconds,
        env_steps,
        examples,
        timings: timings::rows(out),
        notes: report_notes(cfg, out),
        actor_start,
        config_differences: cfg.differences_from_defaults()?,
        other_worlds: crate::sumo_tables::world_tables(out)?,
    };
    let report = write_report(out, input)?;
    Ok((out.join("report.md"), report))
}

/// The report's header lines: the run, and what its splits and expert are.
fn report_notes(cfg: &Config, out: &Path) -> Vec<String> {
    let run = format!(
        "seed {}, configuration hash {} (`{}/run.toml`)",
        cfg.seed,
        config_hash(cfg),
        out.display()
    );
    let names = |nets: &[(deltaplan_sumo::netgen::NetKind, u64)]| {
        nets.iter()
            .map(|(kind, seed)| format!("{}-{seed}", kind.name()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match cfg.train_scenarios.world {
        TrainWorld::Builtin => vec![
            run,
            format!(
                "{} scenarios per family and split; `eval` and `hard` seeds are disjoint from training seeds",
                cfg.eval.per_family
            ),
        ],
        TrainWorld::Sumo => vec![
            run,
            format!(
                "trained in SUMO (`train_scenarios.world = \"sumo\"`): demonstrations by SUMO's own driver model and refinement on the training networks {}; evaluated in SUMO on the held-out networks {}, {} episodes per split (`eval.per_family` x 5, seeds disjoint from training seeds; the hard split doubles the demand)",
                names(&sumo_world::TRAIN_NETWORKS),
                names(&sumo_world::EVAL_NETWORKS),
                cfg.eval.per_family * 5
            ),
            "expert = SUMO's own driver model, the demonstrator (Krauss car following with the built-in expert's acceleration and comfortable deceleration, imperfection 0, speed factor 1, minimum gap 2.5 m, no lane changes; SUMO drives the ego), on the same episodes as the planners; open-loop errors are against its labels (the waypoints it followed). SUMO episodes carry the `intersection` family label; no example episodes are drawn (rendering is the built-in world's)".into(),
        ],
    }
}

/// Renders up to `eval.examples` episodes of the eval split where the SFT planner fails and
/// the refined one does not, for both planners at one crop.
fn render_examples(cfg: &Config, out: &Path, eval_split: &SplitRun) -> Result<Vec<Example>> {
    let specs = suite(cfg, Split::Eval);
    let picks = fixed_failures(&eval_split.sft.episodes, &eval_split.rl.episodes)?;
    picks
        .into_iter()
        .take(cfg.eval.examples)
        .map(|i| {
            let (example, _) =
                render_comparison(cfg, out, Split::Eval, specs[i], &[Policy::Sft, Policy::Rl])?;
            Ok(example)
        })
        .collect()
}

/// The first iteration of metrics.jsonl whose update stepped the actor (after the critic's
/// warm-up); `None` if there is none.
fn actor_start(out: &Path) -> Option<ActorStart> {
    fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["actor_frozen"] == serde_json::Value::Bool(false))
        .and_then(|v| {
            Some(ActorStart {
                iteration: usize::try_from(v["iteration"].as_u64()?).ok()?,
                env_steps: v["env_steps"].as_f64()?,
            })
        })
}

/// The learning curve from metrics.jsonl: iterations in which at least one episode ended
/// (the others have no episode statistics).
fn learning_curve(out: &Path) -> Vec<CurvePoint> {
    fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<IterationStats>(l).ok())
        .filter(|s| s.episodes > 0)
        .map(|s| CurvePoint {
            env_steps: s.env_steps as f64,
            driving_score: f64::from(s.driving_score),
            episode_return: f64::from(s.episode_return),
            failure_rate: f64::from(s.collision_rate + s.offroad_rate),
        })
        .collect()
}

/// The wall time of the whole run, as a previous `run` recorded it in report.json (a
/// standalone `report` does not know it); NaN when there is none.
fn previous_wall_seconds(out: &Path) -> f64 {
    #[derive(serde::Deserialize)]
    struct WallTime {
        wall_seconds: Option<f64>,
    }
    fs::read_to_string(out.join("report.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<WallTime>(&t).ok())
        .and_then(|w| w.wall_seconds)
        .unwrap_or(f64::NAN)
}

pub fn run_all(cfg: &Config, out: &Path) -> Result<()> {
    let t = Instant::now();
    let _lock = guard(cfg, out)?;
    if cfg.planner.is_none() {
        record(cfg, out)?;
        train_sft(cfg, out)?;
    }
    refine(cfg, out)?;
    for split in REPORT_SPLITS {
        for p in Policy::ALL {
            ensure_report_evaluation(cfg, out, p, split)?;
        }
    }
    let (path, report) = report(cfg, out, Some(t.elapsed()))?;
    for split in &report.splits {
        let score = |p: Policy| split.policy(p).summaries.overall[Metric::DrivingScore].mean;
        let failures =
            |p: Policy| 100.0 * split.policy(p).summaries.overall[Metric::FailureRate].mean;
        let gain = split
            .paired(Policy::Sft, Policy::Rl)
            .map(|d| d[Metric::DrivingScore])
            .unwrap_or(Estimate::UNDEFINED);
        println!(
            "{:>5}: driving score {} {:.1} | SFT {:.1} | RL {:.1}   (RL - SFT {:+.1} [{:+.1}, {:+.1}]); failures SFT {:.1}% -> RL {:.1}%",
            split.name,
            match cfg.train_scenarios.world {
                TrainWorld::Builtin => "expert",
                TrainWorld::Sumo => "SUMO driver",
            },
            score(Policy::Expert),
            score(Policy::Sft),
            score(Policy::Rl),
            gain.mean,
            gain.lo,
            gain.hi,
            failures(Policy::Sft),
            failures(Policy::Rl),
        );
    }
    println!("  time: {}", timings::summary_line(&report.timings));
    println!(
        "report: {} ({:.0} s)",
        path.display(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Which planner `export` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportWhat {
    /// The built-in SFT planner.
    Sft,
    /// The refined planner: frozen planner + residual, one graph.
    Refined,
}

/// Writes the built-in SFT planner or the refined planner as one ONNX file (`file`, default
/// `OUT/export/<sft|rl>.onnx`) and returns its path.
pub fn export(
    cfg: &Config,
    out: &Path,
    what: ExportWhat,
    file: Option<PathBuf>,
) -> Result<PathBuf> {
    let frozen = load_frozen(cfg, out)?;
    let name = match what {
        ExportWhat::Sft => "sft.onnx",
        ExportWhat::Refined => "rl.onnx",
    };
    let path = file.unwrap_or_else(|| out.join("export").join(name));
    let bytes = match (what, &frozen) {
        (ExportWhat::Sft, Frozen::Sft(sft)) => export_sft(sft)?,
        (ExportWhat::Sft, Frozen::Onnx(p)) => bail!(
            "the frozen planner of this run already is an ONNX file ({}): deploy that file, or \
             export the refined planner with --policy rl",
            p.path()
        ),
        (ExportWhat::Refined, _) => {
            let rl = rl_path(out);
            if !rl.exists() {
                bail!(
                    "{} is missing: run `deltaplan refine --out {}` first",
                    rl.display(),
                    out.display()
                );
            }
            let loaded = load_policy(&rl, &frozen)?;
            if loaded.iteration < loaded.iterations {
                tracing::warn!(
                    "{} holds iteration {} of {}: exporting an unfinished refinement",
                    rl.display(),
                    loaded.iteration,
                    loaded.iterations
                );
            }
            let residual = Residual {
                ac: &loaded.ac,
                ramp: loaded.ramp,
            };
            match &frozen {
                Frozen::Sft(sft) => export_refined(deltaplan_onnx::Frozen::Sft(sft), residual)?,
                Frozen::Onnx(p) => export_refined(deltaplan_onnx::Frozen::Onnx(p), residual)?,
            }
        }
    };
    write_file(&path, &bytes)?;
    Ok(path)
}
