//! N worlds stepped together across threads, with auto-reset, writing into caller-owned
//! contiguous buffers.
//!
//! Determinism: a world's trajectory depends only on its own actions and on its scenario
//! specs, which are a pure function of (base seed, world index, episode number). Threads only
//! decide who computes which world, so results are bit-identical for any thread count.

use crate::bev::{self, BevSpec};
use crate::config::SimConfig;
use crate::events::{EndReason, StepResult};
use crate::metrics::EpisodeStats;
use crate::obs::{observe, OBS_DIM};
use crate::spec::{Difficulty, Family, ScenarioSpec, Split};
use crate::world::World;
use deltaplan_stdx::seed::mix64;
use rayon::prelude::*;

/// Where a world's next scenario comes from.
#[derive(Clone, Debug)]
pub enum Scenarios {
    /// Random training scenarios: families and seeds drawn from the training split, and each
    /// episode's difficulty drawn uniformly between `easiest` and `hardest` (knob by knob, on
    /// one line between them).
    Train {
        families: Vec<Family>,
        easiest: Difficulty,
        hardest: Difficulty,
    },
    /// A fixed list, one episode per world, no reset (evaluation).
    Fixed(Vec<ScenarioSpec>),
}

/// Per-step outputs for all N worlds, each a contiguous array in world order.
#[derive(Clone, Debug, Default)]
pub struct StepBuffers {
    /// [N, obs_dim]: the observation to act on next (after an auto-reset, the new episode's).
    pub obs: Vec<f32>,
    pub reward: Vec<f32>,
    pub terminated: Vec<bool>,
    pub truncated: Vec<bool>,
    /// [N, obs_dim]: the last observation of an episode that ended this step (valid where
    /// `terminated || truncated`), for bootstrapping truncated episodes.
    pub final_obs: Vec<f32>,
}

impl StepBuffers {
    /// Buffers for `n` worlds of this simulator (observations of [`OBS_DIM`] floats).
    pub fn new(n: usize) -> Self {
        Self::with_obs_dim(n, OBS_DIM)
    }

    /// Buffers for `n` worlds with observations of `obs_dim` floats.
    pub fn with_obs_dim(n: usize, obs_dim: usize) -> Self {
        StepBuffers {
            obs: vec![0.0; n * obs_dim],
            reward: vec![0.0; n],
            terminated: vec![false; n],
            truncated: vec![false; n],
            final_obs: vec![0.0; n * obs_dim],
        }
    }
}

/// One world and its bookkeeping.
#[derive(Clone, Debug)]
struct Slot {
    world: World,
    /// Episode number in this world (its scenario is a function of it).
    episode: u64,
    /// Stats of the episode that ended most recently.
    finished: EpisodeStats,
    /// Fixed mode: the world's single episode is over.
    idle: bool,
    /// Plans executed since the episode began: replaying them from the episode's spec
    /// restores the world bit for bit (see [`BatchEnv::snapshot`]).
    history: Vec<f32>,
    /// Outcome of the last step.
    last: StepResult,
}

/// N worlds.
pub struct BatchEnv {
    slots: Vec<Slot>,
    scenarios: Scenarios,
    seed: u64,
    /// Index of the first slot's world in the whole batch ([`BatchEnv::train_part`]): slot `i`
    /// plays world `first_world + i`'s scenarios.
    first_world: usize,
    /// The raster appended to every observation ([`BatchEnv::with_bev_observation`]).
    raster: Option<BevSpec>,
}

/// What it takes to rebuild a training batch exactly: per world, the episode number and the
/// plans executed since that episode began. Small (one episode of plans per world), and free of
/// any simulator internals, so it survives refactors of the world state.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EnvSnapshot {
    pub seed: u64,
    pub episodes: Vec<u64>,
    pub histories: Vec<Vec<f32>>,
}

/// Why an [`EnvSnapshot`] cannot be restored into a batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// The snapshot was taken of a batch with another seed or size.
    #[error("environment snapshot is for seed {snapshot_seed} with {snapshot_worlds} worlds, this batch has seed {seed} with {worlds}")]
    OtherBatch {
        snapshot_seed: u64,
        snapshot_worlds: usize,
        seed: u64,
        worlds: usize,
    },
    /// A world's history is not a whole number of plans: it belongs to another horizon or
    /// the file is damaged.
    #[error("environment snapshot history of {floats} floats is not a whole number of {action_dim}-float plans")]
    PartialPlan { floats: usize, action_dim: usize },
    /// An external simulator did not retrace a world's recorded plans (it failed, or it ended
    /// an episode where the recording did not).
    #[error("world {world} did not replay its recorded history: {reason}")]
    Replay { world: usize, reason: String },
}

/// The scenario of `episode` in `world`: a pure function, so thread scheduling cannot change it.
fn spec_for(scenarios: &Scenarios, seed: u64, world: usize, episode: u64) -> ScenarioSpec {
    match scenarios {
        Scenarios::Fixed(specs) => specs[world],
        Scenarios::Train {
            families,
            easiest,
            hardest,
        } => {
            // SplitMix64 finalisers decorrelate (seed, world, episode) triples.
            let h = mix64(
                mix64(seed ^ 0xD1B5_4A32_D192_ED03).wrapping_add(mix64(world as u64)) ^ episode,
            );
            let family = families[(h % families.len() as u64) as usize];
            let seed = Split::Train.seed_base() + (mix64(h) % Split::SPLIT_SIZE);
            // 24 bits of another mix: a uniform t in [0, 1).
            let t = (mix64(h ^ 0x5851_F42D_4C95_7F2D) >> 40) as f32 / (1u64 << 24) as f32;
            ScenarioSpec {
                family,
                seed,
                difficulty: easiest.lerp(hardest, t),
            }
        }
    }
}

impl BatchEnv {
    /// `n` training worlds at one difficulty.
    pub fn train(
        cfg: SimConfig,
        n: usize,
        seed: u64,
        families: Vec<Family>,
        difficulty: Difficulty,
    ) -> Self {
        Self::train_mixed(cfg, n, seed, families, (difficulty, difficulty))
    }

    /// `n` training worlds whose episodes draw their difficulty uniformly from
    /// `range = (easiest, hardest)`.
    pub fn train_mixed(
        cfg: SimConfig,
        n: usize,
        seed: u64,
        families: Vec<Family>,
        range: (Difficulty, Difficulty),
    ) -> Self {
        Self::train_part(cfg, 0..n, seed, families, range)
    }

    /// Worlds `worlds` of the `train_mixed` batch with the same arguments: each plays exactly
    /// the scenarios it plays there, so batches of disjoint ranges (one per machine) together
    /// step the whole batch's worlds.
    pub fn train_part(
        cfg: SimConfig,
        worlds: std::ops::Range<usize>,
        seed: u64,
        families: Vec<Family>,
        range: (Difficulty, Difficulty),
    ) -> Self {
        Self::with(
            cfg,
            worlds,
            seed,
            Scenarios::Train {
                families,
                easiest: range.0,
                hardest: range.1,
            },
        )
    }

    /// One world per spec, each run for exactly one episode.
    pub fn fixed(cfg: SimConfig, specs: Vec<ScenarioSpec>) -> Self {
        let n = specs.len();
        Self::with(cfg, 0..n, 0, Scenarios::Fixed(specs))
    }

    fn with(
        cfg: SimConfig,
        worlds: std::ops::Range<usize>,
        seed: u64,
        scenarios: Scenarios,
    ) -> Self {
        let first_world = worlds.start;
        let slots = worlds
            .into_par_iter()
            .map(|i| {
                let mut world = World::new(cfg);
                world.reset(spec_for(&scenarios, seed, i, 0));
                Slot {
                    world,
                    episode: 0,
                    finished: EpisodeStats::default(),
                    idle: false,
                    history: Vec::new(),
                    last: StepResult {
                        reward: 0.0,
                        end: EndReason::Running,
                    },
                }
            })
            .collect();
        BatchEnv {
            slots,
            scenarios,
            seed,
            first_world,
            raster: None,
        }
    }

    /// Observations that carry a BEV raster after the vector: each row is the [`OBS_DIM`]
    /// floats of [`observe`], then the raster of [`bev::render`] (`[C, H, W]`) as floats in
    /// [0, 1] ([`bev::to_unit_f32`]), for planners that read a raster (a CNN over a
    /// bird's-eye view). Final observations carry their raster too, so truncated episodes
    /// bootstrap from what the planner saw. The trajectories are those of the plain batch.
    pub fn with_bev_observation(mut self, spec: BevSpec) -> Result<Self, bev::BevSpecError> {
        spec.validate()?;
        self.raster = Some(spec);
        Ok(self)
    }

    /// The raster each observation carries after the vector, if any.
    pub fn bev_observation(&self) -> Option<BevSpec> {
        self.raster
    }

    /// Floats per observation: [`OBS_DIM`], plus the raster's `C * H * W` if there is one.
    pub fn obs_dim(&self) -> usize {
        OBS_DIM + self.raster.map_or(0, |r| r.len())
    }

    /// The state needed to rebuild this batch with [`BatchEnv::restore`].
    pub fn snapshot(&self) -> EnvSnapshot {
        EnvSnapshot {
            seed: self.seed,
            episodes: self.slots.iter().map(|s| s.episode).collect(),
            histories: self.slots.iter().map(|s| s.history.clone()).collect(),
        }
    }

    /// Rebuilds every world from a snapshot of a batch made with the same configuration, seed
    /// and size, by resetting to each world's episode and replaying its plans.
    pub fn restore(&mut self, snap: &EnvSnapshot) -> Result<(), SnapshotError> {
        let n = self.slots.len();
        if snap.seed != self.seed || snap.episodes.len() != n || snap.histories.len() != n {
            return Err(SnapshotError::OtherBatch {
                snapshot_seed: snap.seed,
                snapshot_worlds: snap.episodes.len(),
                seed: self.seed,
                worlds: n,
            });
        }
        let a = self.action_dim();
        if let Some(h) = snap.histories.iter().find(|h| h.len() % a != 0) {
            return Err(SnapshotError::PartialPlan {
                floats: h.len(),
                action_dim: a,
            });
        }
        let (scenarios, seed, first) = (&self.scenarios, self.seed, self.first_world);
        self.slots
            .par_iter_mut()
            .zip(&snap.episodes)
            .zip(&snap.histories)
            .enumerate()
            .for_each(|(i, ((slot, &episode), history))| {
                slot.world
                    .reset(spec_for(scenarios, seed, first + i, episode));
                for plan in history.chunks_exact(a) {
                    slot.world.step(plan);
                }
                slot.episode = episode;
                slot.history.clone_from(history);
                slot.idle = false;
            });
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Index of slot 0's world in the whole batch (0 unless built by [`BatchEnv::train_part`]).
    pub fn first_world(&self) -> usize {
        self.first_world
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn world(&self, i: usize) -> &World {
        &self.slots[i].world
    }

    pub fn action_dim(&self) -> usize {
        self.slots.first().map_or(0, |s| s.world.cfg.action_dim())
    }

    /// Stats of the episode that most recently ended in world `i`.
    pub fn finished(&self, i: usize) -> &EpisodeStats {
        &self.slots[i].finished
    }

    /// In fixed mode: whether world `i` has finished its episode.
    pub fn is_idle(&self, i: usize) -> bool {
        self.slots[i].idle
    }

    /// Whether every world in fixed mode has finished.
    pub fn all_idle(&self) -> bool {
        self.slots.iter().all(|s| s.idle)
    }

    /// Writes the current observations into `obs` ([N, obs_dim]).
    pub fn observe(&self, obs: &mut [f32]) {
        let raster = self.raster.as_ref();
        self.slots
            .par_iter()
            .zip(obs.par_chunks_mut(self.obs_dim()))
            .with_min_len(8)
            .for_each(|(s, o)| observe_with(&s.world, raster, o));
    }

    /// Writes the current bird's-eye-view rasters into `out` ([N, C, H, W] bytes, see
    /// [`crate::bev`]), the same states [`BatchEnv::observe`] describes. `spec` must be valid
    /// ([`BevSpec::validate`]). Allocates nothing; bit-identical for any thread count.
    pub fn observe_bev(&self, spec: &BevSpec, out: &mut [u8]) {
        assert_eq!(
            out.len(),
            self.slots.len() * spec.len(),
            "BEV buffer must be [N, C, H, W]"
        );
        self.slots
            .par_iter()
            .zip(out.par_chunks_mut(spec.len()))
            .with_min_len(4)
            .for_each(|(s, o)| bev::render(&s.world, spec, o));
    }

    /// Writes the expert's plans into `actions` ([N, 2H]).
    pub fn expert_actions(&self, actions: &mut [f32]) {
        let a = self.action_dim();
        self.slots
            .par_iter()
            .zip(actions.par_chunks_mut(a))
            .with_min_len(8)
            .for_each(|(s, out)| crate::expert::expert_plan(&s.world, out));
    }

    /// Steps every world with its plan in `actions` ([N, 2H], ego-frame waypoints). Ended
    /// episodes are recorded, their last observation written to `final_obs`, and (training
    /// mode) the world is reset and `obs` holds the new episode's first observation. In fixed
    /// mode a finished world stays idle: its reward is 0 and its flags false from then on.
    pub fn step(&mut self, actions: &[f32], out: &mut StepBuffers) {
        self.step_holding(actions, &[], out)
    }

    /// [`BatchEnv::step`], except that the worlds `held[i]` (missing entries: not held) do not
    /// move this step: reward 0, flags false, their `obs` rows untouched. For environments that
    /// reset one step after an episode ends (gymnasium's next-step autoreset), where the step
    /// after the end only hands back the new episode's first observation.
    pub fn step_holding(&mut self, actions: &[f32], held: &[bool], out: &mut StepBuffers) {
        let a = self.action_dim();
        let n = self.slots.len();
        assert_eq!(actions.len(), n * a, "actions must be [N, 2H]");
        let fixed = matches!(self.scenarios, Scenarios::Fixed(_));
        let (scenarios, seed, od) = (&self.scenarios, self.seed, self.obs_dim());
        let first = self.first_world;
        let raster = self.raster.as_ref();
        self.slots
            .par_iter_mut()
            .zip(actions.par_chunks(a))
            .zip(out.obs.par_chunks_mut(od))
            .zip(out.final_obs.par_chunks_mut(od))
            .enumerate()
            .with_min_len(8)
            .for_each(|(i, (((slot, plan), obs), final_obs))| {
                if slot.idle || held.get(i).copied().unwrap_or(false) {
                    slot.last = StepResult {
                        reward: 0.0,
                        end: EndReason::Running,
                    };
                    return;
                }
                slot.history.extend_from_slice(plan);
                slot.last = slot.world.step(plan);
                if slot.last.end != EndReason::Running {
                    slot.finished = slot.world.stats;
                    observe_with(&slot.world, raster, final_obs);
                    if fixed {
                        slot.idle = true;
                    } else {
                        slot.episode += 1;
                        slot.history.clear();
                        slot.world
                            .reset(spec_for(scenarios, seed, first + i, slot.episode));
                    }
                }
                observe_with(&slot.world, raster, obs);
            });
        for (i, slot) in self.slots.iter().enumerate() {
            let end = slot.last.end;
            out.reward[i] = slot.last.reward;
            out.terminated[i] = end.is_termination();
            out.truncated[i] = end != EndReason::Running && !end.is_termination();
        }
    }
}

/// One observation row of `w`: the vector ([`observe`]), then, if `raster` is set, its raster
/// as floats in [0, 1] (the rows of [`BatchEnv::with_bev_observation`]; `out` is
/// `OBS_DIM + raster.len()` long).
pub fn observe_with(w: &World, raster: Option<&BevSpec>, out: &mut [f32]) {
    let (vector, rest) = out.split_at_mut(OBS_DIM);
    observe(w, vector);
    if let Some(spec) = raster {
        thread_local! {
            /// The raster's bytes before they become floats (one per thread, grown once).
            static BYTES: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        BYTES.with_borrow_mut(|bytes| {
            bytes.resize(spec.len(), 0);
            bev::render(w, spec, bytes);
            bev::to_unit_f32(bytes, rest);
        });
    }
}
