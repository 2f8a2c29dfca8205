//! N worlds stepped together across threads, with auto-reset, writing into caller-owned
//! contiguous buffers.
//!
//! Determinism: a world's trajectory depends only on its own actions and on its scenario
//! specs, which are a pure function of (base seed, world index, episode number). Threads only
//! decide who computes which world, so results are bit-identical for any thread count.

use crate::metrics::EpisodeStats;
use crate::obs::{observe, OBS_DIM};
use crate::scenario::{Difficulty, Family, ScenarioSpec, Split};
use crate::world::{EndReason, World};
use crate::SimConfig;
use rayon::prelude::*;

/// Where a world's next scenario comes from.
#[derive(Clone, Debug)]
pub enum Scenarios {
    /// Random training scenarios: families and seeds drawn from the training split.
    Train {
        families: Vec<Family>,
        difficulty: Difficulty,
    },
    /// A fixed list, one episode per world, no reset (evaluation).
    Fixed(Vec<ScenarioSpec>),
}

/// Per-step outputs for all N worlds, each a contiguous array in world order.
#[derive(Clone, Debug, Default)]
pub struct StepBuffers {
    /// [N, OBS_DIM]: the observation to act on next (after an auto-reset, the new episode's).
    pub obs: Vec<f32>,
    pub reward: Vec<f32>,
    pub terminated: Vec<bool>,
    pub truncated: Vec<bool>,
    /// [N, OBS_DIM]: the last observation of an episode that ended this step (valid where
    /// `terminated || truncated`), for bootstrapping truncated episodes.
    pub final_obs: Vec<f32>,
}

impl StepBuffers {
    pub fn new(n: usize) -> Self {
        StepBuffers {
            obs: vec![0.0; n * OBS_DIM],
            reward: vec![0.0; n],
            terminated: vec![false; n],
            truncated: vec![false; n],
            final_obs: vec![0.0; n * OBS_DIM],
        }
    }
}

/// N worlds.
pub struct BatchEnv {
    worlds: Vec<World>,
    scenarios: Scenarios,
    seed: u64,
    episodes: Vec<u64>,
    /// Stats of the episode that ended most recently in each world.
    finished: Vec<EpisodeStats>,
    /// In fixed mode: whether the world's single episode is over.
    idle: Vec<bool>,
}

/// The scenario of `episode` in `world`: a pure function, so thread scheduling cannot change it.
fn spec_for(scenarios: &Scenarios, seed: u64, world: usize, episode: u64) -> ScenarioSpec {
    match scenarios {
        Scenarios::Fixed(specs) => specs[world],
        Scenarios::Train {
            families,
            difficulty,
        } => {
            let h =
                mix(mix(seed ^ 0xD1B5_4A32_D192_ED03).wrapping_add(mix(world as u64)) ^ episode);
            let family = families[(h % families.len() as u64) as usize];
            let seed = Split::Train.seed_base() + (mix(h) % Split::SPLIT_SIZE);
            ScenarioSpec {
                family,
                seed,
                difficulty: *difficulty,
            }
        }
    }
}

fn mix(mut z: u64) -> u64 {
    // SplitMix64 finaliser: decorrelates (seed, world, episode) triples.
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl BatchEnv {
    /// `n` training worlds.
    pub fn train(
        cfg: SimConfig,
        n: usize,
        seed: u64,
        families: Vec<Family>,
        difficulty: Difficulty,
    ) -> Self {
        Self::with(
            cfg,
            n,
            seed,
            Scenarios::Train {
                families,
                difficulty,
            },
        )
    }

    /// One world per spec, each run for exactly one episode.
    pub fn fixed(cfg: SimConfig, specs: Vec<ScenarioSpec>) -> Self {
        let n = specs.len();
        Self::with(cfg, n, 0, Scenarios::Fixed(specs))
    }

    fn with(cfg: SimConfig, n: usize, seed: u64, scenarios: Scenarios) -> Self {
        let mut env = BatchEnv {
            worlds: (0..n).map(|_| World::new(cfg)).collect(),
            scenarios,
            seed,
            episodes: vec![0; n],
            finished: vec![EpisodeStats::default(); n],
            idle: vec![false; n],
        };
        let specs: Vec<ScenarioSpec> = (0..n)
            .map(|i| spec_for(&env.scenarios, seed, i, 0))
            .collect();
        env.worlds
            .par_iter_mut()
            .zip(specs)
            .for_each(|(w, spec)| w.reset(spec));
        env
    }

    pub fn len(&self) -> usize {
        self.worlds.len()
    }

    pub fn is_empty(&self) -> bool {
        self.worlds.is_empty()
    }

    pub fn worlds(&self) -> &[World] {
        &self.worlds
    }

    pub fn action_dim(&self) -> usize {
        self.worlds.first().map_or(0, |w| w.cfg.action_dim())
    }

    /// Stats of the episode that most recently ended in world `i`.
    pub fn finished(&self, i: usize) -> &EpisodeStats {
        &self.finished[i]
    }

    /// In fixed mode: whether world `i` has finished its episode.
    pub fn is_idle(&self, i: usize) -> bool {
        self.idle[i]
    }

    /// Whether every world in fixed mode has finished.
    pub fn all_idle(&self) -> bool {
        self.idle.iter().all(|&d| d)
    }

    /// Writes the current observations into `obs` ([N, OBS_DIM]).
    pub fn observe(&self, obs: &mut [f32]) {
        self.worlds
            .par_iter()
            .zip(obs.par_chunks_mut(OBS_DIM))
            .with_min_len(8)
            .for_each(|(w, o)| observe(w, o));
    }

    /// Writes the expert's plans into `actions` ([N, 2H]).
    pub fn expert_actions(&self, actions: &mut [f32]) {
        let a = self.action_dim();
        self.worlds
            .par_iter()
            .zip(actions.par_chunks_mut(a))
            .with_min_len(8)
            .for_each(|(w, out)| crate::expert::expert_plan(w, out));
    }

    /// Steps every world with its plan in `actions` ([N, 2H], ego-frame waypoints). Ended
    /// episodes are recorded, their last observation written to `final_obs`, and (training
    /// mode) the world is reset and `obs` holds the new episode's first observation. In fixed
    /// mode a finished world stays idle: its reward is 0 and its flags false from then on.
    pub fn step(&mut self, actions: &[f32], out: &mut StepBuffers) {
        let a = self.action_dim();
        let n = self.worlds.len();
        assert_eq!(actions.len(), n * a, "actions must be [N, 2H]");
        let fixed = matches!(self.scenarios, Scenarios::Fixed(_));
        let (scenarios, seed) = (&self.scenarios, self.seed);
        self.worlds
            .par_iter_mut()
            .zip(actions.par_chunks(a))
            .zip(out.obs.par_chunks_mut(OBS_DIM))
            .zip(out.final_obs.par_chunks_mut(OBS_DIM))
            .zip(out.reward.par_iter_mut())
            .zip(out.terminated.par_iter_mut())
            .zip(out.truncated.par_iter_mut())
            .zip(self.finished.par_iter_mut())
            .zip(self.episodes.par_iter_mut())
            .zip(self.idle.par_iter_mut())
            .enumerate()
            .with_min_len(8)
            .for_each(
                |(
                    i,
                    (
                        ((((((((w, act), obs), fin_obs), rew), term), trunc), finished), episode),
                        idle,
                    ),
                )| {
                    if *idle {
                        *rew = 0.0;
                        *term = false;
                        *trunc = false;
                        return;
                    }
                    let r = w.step(act);
                    *rew = r.reward;
                    *term = r.end.is_termination();
                    *trunc = r.end != EndReason::Running && !r.end.is_termination();
                    if r.end != EndReason::Running {
                        *finished = w.stats;
                        observe(w, fin_obs);
                        if fixed {
                            *idle = true;
                        } else {
                            *episode += 1;
                            w.reset(spec_for(scenarios, seed, i, *episode));
                        }
                    }
                    observe(w, obs);
                },
            );
    }
}
