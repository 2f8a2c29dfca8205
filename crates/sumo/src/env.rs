//! [`SumoEnv`]: N SUMO worlds behind the environment seam ([`VecEnv`], [`ExpertEnv`]), each
//! its own SUMO process, stepped in parallel across cores (rayon).
//!
//! Fault handling: a world whose SUMO dies, stops answering within the timeout, or refuses a
//! command is restarted (a new process) with a `tracing::warn!` naming the world, the process
//! and the episode, and that episode is discarded: its record is never reported. An evaluation
//! world reruns the same scenario from the start; a training world starts its next scenario
//! (the step reports no episode end, so no record is counted for it). Starting fails at most
//! [`MAX_START_ATTEMPTS`] times in a row before the world gives up: [`SumoEnv::new`] returns
//! that as an error, and during a step the world goes idle and [`VecEnv::fault`] says why, so
//! the loop driving it stops with the message: never a hang, never a panic.
//!
//! Resumable ([`ResumableEnv`]) by replay, as the built-in batch is: a SUMO process serves
//! episode after episode, so each world keeps the episode its process started with and every
//! plan executed since, and a restore starts a new process there and executes the plans again.
//! SUMO is deterministic for the same seed and commands, so the worlds come back bit for bit.

use crate::locate::SumoBinaries;
use crate::world::{NetContext, SumoConfig, SumoWorld, WorldError};
use deltaplan_sim::config::SimConfig;
use deltaplan_sim::events::EndReason;
use deltaplan_sim::metrics::EpisodeStats;
use deltaplan_sim::obs::OBS_DIM;
use deltaplan_sim::spec::{Difficulty, Family, ScenarioSpec, Split};
use deltaplan_sim::{EnvSnapshot, ExpertEnv, ResumableEnv, SnapshotError, StepBuffers, VecEnv};
use deltaplan_stdx::seed::mix64;
use rayon::prelude::*;
use std::sync::Arc;

/// Starting a world's episode fails this many times in a row before the environment stops.
pub const MAX_START_ATTEMPTS: u32 = 3;

/// Where a world's episodes come from.
#[derive(Clone, Debug, PartialEq)]
pub enum SumoScenarios {
    /// Training: episode seeds drawn from the training split from (seed, world, episode);
    /// worlds reset themselves.
    Train { seed: u64 },
    /// A fixed list of episode seeds, one episode per world, no reset (evaluation).
    Fixed(Vec<u64>),
}

/// A world whose SUMO would not start, [`MAX_START_ATTEMPTS`] times in a row.
#[derive(Debug, thiserror::Error)]
#[error("SUMO world {world} could not start episode seed {seed} after {MAX_START_ATTEMPTS} attempts: {error}")]
pub struct StartFailure {
    pub world: usize,
    pub seed: u64,
    pub error: WorldError,
}

/// N worlds in SUMO.
pub struct SumoEnv {
    slots: Vec<Slot>,
    scenarios: SumoScenarios,
    action_dim: usize,
}

struct Slot {
    world: SumoWorld,
    episode: u64,
    finished: EpisodeStats,
    idle: bool,
    /// SUMO processes restarted after a fault in this world.
    restarts: u32,
    /// Why this world gave up (it is idle from then on).
    failure: Option<String>,
    /// The episode this world's SUMO process started with, and the plans executed since:
    /// what rebuilds the world on a resume.
    process_episode: u64,
    history: Vec<f32>,
}

/// The episode seed of `episode` in world `i`: a pure function.
fn seed_for(scenarios: &SumoScenarios, world: usize, episode: u64) -> u64 {
    match scenarios {
        SumoScenarios::Fixed(seeds) => seeds[world],
        SumoScenarios::Train { seed } => train_episode_seed(*seed, world, episode),
    }
}

/// The training split's episode seed of `episode` in training world `world` of a run seeded
/// with `seed` (refinement's worlds and the demonstrator's draw the same).
pub(crate) fn train_episode_seed(seed: u64, world: usize, episode: u64) -> u64 {
    let h = mix64(mix64(seed ^ 0x5355_4d4f).wrapping_add(mix64(world as u64)) ^ episode);
    Split::Train.seed_base() + h % Split::SPLIT_SIZE
}

/// Starts episode `seed` of world `i` with `reset` (deltaplan or SUMO driving the ego),
/// restarting SUMO after a failed start up to [`MAX_START_ATTEMPTS`] times, each failure
/// logged and counted in `restarts`.
pub(crate) fn start_with_retries(
    world: &mut SumoWorld,
    i: usize,
    seed: u64,
    reset: fn(&mut SumoWorld, u64) -> Result<(), WorldError>,
    restarts: &mut u32,
) -> Result<(), StartFailure> {
    let mut attempt = 1;
    loop {
        match reset(world, seed) {
            Ok(()) => return Ok(()),
            Err(e) => {
                tracing::warn!(
                    "SUMO world {i} (episode seed {seed}) failed to start (attempt {attempt} of {MAX_START_ATTEMPTS}): {e}"
                );
                *restarts += 1;
                if attempt == MAX_START_ATTEMPTS {
                    return Err(StartFailure {
                        world: i,
                        seed,
                        error: e,
                    });
                }
                attempt += 1;
            }
        }
    }
}

impl SumoEnv {
    /// `n` worlds (training) or one per seed (fixed); world `i` drives on `nets[i % len]`.
    /// Every world's first episode starts here; a world that cannot start is an error.
    pub fn new(
        cfg: SimConfig,
        sumo_cfg: SumoConfig,
        nets: &[Arc<NetContext>],
        bins: &SumoBinaries,
        scenarios: SumoScenarios,
        n: usize,
    ) -> Result<Self, StartFailure> {
        assert!(!nets.is_empty(), "SumoEnv needs at least one network");
        let n = match &scenarios {
            SumoScenarios::Fixed(seeds) => seeds.len(),
            SumoScenarios::Train { .. } => n,
        };
        let mut slots: Vec<Slot> = (0..n)
            .map(|i| Slot {
                world: SumoWorld::new(
                    cfg,
                    sumo_cfg.clone(),
                    Arc::clone(&nets[i % nets.len()]),
                    bins.clone(),
                ),
                episode: 0,
                finished: EpisodeStats::default(),
                idle: false,
                restarts: 0,
                failure: None,
                process_episode: 0,
                history: Vec::new(),
            })
            .collect();
        slots
            .par_iter_mut()
            .enumerate()
            .map(|(i, s)| start_episode(s, i, seed_for(&scenarios, i, 0)))
            .collect::<Result<(), StartFailure>>()?;
        Ok(SumoEnv {
            slots,
            scenarios,
            action_dim: cfg.action_dim(),
        })
    }

    pub fn world(&self, i: usize) -> &SumoWorld {
        &self.slots[i].world
    }

    /// For fault tests: world `i`'s SUMO process id.
    pub fn sumo_pid(&self, i: usize) -> Option<u32> {
        self.slots[i].world.sumo_pid()
    }

    /// SUMO processes restarted after faults, per world.
    pub fn restarts(&self) -> Vec<u32> {
        self.slots.iter().map(|s| s.restarts).collect()
    }

    /// The training seed a snapshot carries (0 for a fixed list).
    fn scenario_seed(&self) -> u64 {
        match self.scenarios {
            SumoScenarios::Train { seed } => seed,
            SumoScenarios::Fixed(_) => 0,
        }
    }
}

/// Starts episode `seed` in a slot, restarting SUMO after a failed start up to
/// [`MAX_START_ATTEMPTS`] times.
fn start_episode(slot: &mut Slot, i: usize, seed: u64) -> Result<(), StartFailure> {
    start_with_retries(
        &mut slot.world,
        i,
        seed,
        SumoWorld::reset,
        &mut slot.restarts,
    )?;
    if slot.world.started_process() {
        slot.process_episode = slot.episode;
        slot.history.clear();
    }
    Ok(())
}

/// Starts the slot's next episode during a step; a world that cannot start goes idle with
/// its failure kept for [`VecEnv::fault`].
fn restart_or_give_up(slot: &mut Slot, i: usize, seed: u64) {
    if let Err(failure) = start_episode(slot, i, seed) {
        tracing::error!("{failure}");
        slot.failure = Some(failure.to_string());
        slot.idle = true;
    }
}

/// One step of one world: `(reward, how it ended)`, and whether SUMO failed (the episode was
/// discarded and a new one started, or the world gave up).
fn step_slot(
    slot: &mut Slot,
    i: usize,
    scenarios: &SumoScenarios,
    plan: &[f32],
    obs: &mut [f32],
    final_obs: &mut [f32],
) -> ((f32, EndReason), bool) {
    if slot.idle {
        return ((0.0, EndReason::Running), false);
    }
    let fixed = matches!(scenarios, SumoScenarios::Fixed(_));
    let result = match slot.world.step(plan) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(
                "SUMO world {i} (process {}, episode seed {}) failed: {e}; restarting SUMO, episode discarded",
                slot.world.sumo_pid().map_or("gone".to_string(), |p| p.to_string()),
                slot.world.seed
            );
            slot.restarts += 1;
            slot.world.kill_sumo();
            if !fixed {
                slot.episode += 1;
            }
            let seed = seed_for(scenarios, i, slot.episode);
            restart_or_give_up(slot, i, seed);
            slot.world.observe(obs);
            return ((0.0, EndReason::Running), true);
        }
    };
    slot.history.extend_from_slice(plan);
    if result.end != EndReason::Running {
        slot.finished = slot.world.stats;
        slot.world.observe(final_obs);
        if fixed {
            slot.idle = true;
        } else {
            slot.episode += 1;
            restart_or_give_up(slot, i, seed_for(scenarios, i, slot.episode));
        }
    }
    slot.world.observe(obs);
    ((result.reward, result.end), false)
}

impl VecEnv for SumoEnv {
    fn num_envs(&self) -> usize {
        self.slots.len()
    }

    fn obs_dim(&self) -> usize {
        OBS_DIM
    }

    fn action_dim(&self) -> usize {
        self.action_dim
    }

    fn observe(&self, obs: &mut [f32]) {
        self.slots
            .par_iter()
            .zip(obs.par_chunks_mut(OBS_DIM))
            .for_each(|(s, o)| s.world.observe(o));
    }

    fn step(&mut self, plans: &[f32], out: &mut StepBuffers) {
        let a = self.action_dim;
        assert_eq!(plans.len(), self.slots.len() * a, "plans must be [N, 2H]");
        let scenarios = &self.scenarios;
        let results: Vec<(f32, EndReason)> = self
            .slots
            .par_iter_mut()
            .with_max_len(1)
            .zip(plans.par_chunks(a))
            .zip(out.obs.par_chunks_mut(OBS_DIM))
            .zip(out.final_obs.par_chunks_mut(OBS_DIM))
            .enumerate()
            .map(|(i, (((slot, plan), obs), final_obs))| {
                step_slot(slot, i, scenarios, plan, obs, final_obs).0
            })
            .collect();
        for (i, (reward, end)) in results.into_iter().enumerate() {
            out.reward[i] = reward;
            out.terminated[i] = end.is_termination();
            out.truncated[i] = end != EndReason::Running && !end.is_termination();
        }
    }

    fn finished(&self, i: usize) -> &EpisodeStats {
        &self.slots[i].finished
    }

    fn all_idle(&self) -> bool {
        self.slots.iter().all(|s| s.idle)
    }

    fn fault(&self) -> Option<String> {
        self.slots.iter().find_map(|s| s.failure.clone())
    }

    fn world_label(&self, i: usize) -> String {
        let w = &self.slots[i].world;
        format!(
            "SUMO world {i} ({} network, episode seed {})",
            w.net.files.name, w.seed
        )
    }
}

impl ExpertEnv for SumoEnv {
    fn expert_actions(&self, plans: &mut [f32]) {
        self.slots
            .par_iter()
            .zip(plans.par_chunks_mut(self.action_dim))
            .for_each(|(s, p)| s.world.expert_plan(p));
    }

    /// SUMO episodes have no family of their own: they are labelled `Intersection` (signalised
    /// junction networks) with the episode seed.
    fn scenario(&self, i: usize) -> ScenarioSpec {
        ScenarioSpec {
            family: Family::Intersection,
            seed: self.slots[i].world.seed,
            difficulty: Difficulty::default(),
        }
    }
}

impl ResumableEnv for SumoEnv {
    /// Per world: the episode its SUMO process started with (`episodes`) and every plan
    /// executed since (`histories`); `seed` is the training seed (0 for a fixed list).
    fn snapshot(&self) -> EnvSnapshot {
        EnvSnapshot {
            seed: self.scenario_seed(),
            episodes: self.slots.iter().map(|s| s.process_episode).collect(),
            histories: self.slots.iter().map(|s| s.history.clone()).collect(),
        }
    }

    /// Starts a new SUMO process per world at its recorded episode and executes the recorded
    /// plans again (episodes that ended then end again and the next ones start). A world
    /// whose SUMO fails during the replay makes the restore fail.
    fn restore(&mut self, snap: &EnvSnapshot) -> Result<(), SnapshotError> {
        let (n, a) = (self.slots.len(), self.action_dim);
        if snap.seed != self.scenario_seed()
            || snap.episodes.len() != n
            || snap.histories.len() != n
        {
            return Err(SnapshotError::OtherBatch {
                snapshot_seed: snap.seed,
                snapshot_worlds: snap.episodes.len(),
                seed: self.scenario_seed(),
                worlds: n,
            });
        }
        if let Some(h) = snap.histories.iter().find(|h| h.len() % a != 0) {
            return Err(SnapshotError::PartialPlan {
                floats: h.len(),
                action_dim: a,
            });
        }
        let scenarios = &self.scenarios;
        self.slots
            .par_iter_mut()
            .with_max_len(1)
            .zip(&snap.episodes)
            .zip(&snap.histories)
            .enumerate()
            .try_for_each(|(i, ((slot, &episode), history))| {
                let replay_error = |reason: String| SnapshotError::Replay { world: i, reason };
                slot.world.kill_sumo();
                slot.episode = episode;
                slot.idle = false;
                slot.failure = None;
                start_episode(slot, i, seed_for(scenarios, i, episode))
                    .map_err(|e| replay_error(e.to_string()))?;
                let (mut obs, mut final_obs) = ([0.0; OBS_DIM], [0.0; OBS_DIM]);
                for (k, plan) in history.chunks_exact(a).enumerate() {
                    let (_, failed) = step_slot(slot, i, scenarios, plan, &mut obs, &mut final_obs);
                    if failed || slot.failure.is_some() {
                        return Err(replay_error(format!("SUMO failed at plan {k}")));
                    }
                }
                Ok(())
            })
    }
}
