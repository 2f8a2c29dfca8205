//! The scenario distribution of the training worlds, defined once and shared by the recording
//! of demonstrations and by refinement, so imitation and RL see the same scenarios.

use deltaplan_sim::{BatchEnv, Difficulty, Family, ScenarioSpec, SimConfig, Split};
use serde::{Deserialize, Serialize};

use crate::error::{LearnError, Result};

/// Which scenarios the training worlds draw (evaluation has its own split and difficulty).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainScenarios {
    /// Scenario families, drawn uniformly per episode.
    pub families: Vec<Family>,
    /// Easiest difficulty of a training episode.
    pub difficulty: Difficulty,
    /// Episodes draw their difficulty uniformly from `difficulty` up to this fraction of the way
    /// to `difficulty.harder()`, the hard evaluation split's difficulty (0: always `difficulty`).
    pub difficulty_mix: f32,
    /// The simulator the training worlds run in: the recording's (the built-in expert, or
    /// SUMO's own driver model) and refinement's.
    pub world: TrainWorld,
}

/// The simulator training worlds run in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrainWorld {
    /// deltaplan's own simulator, drawing `families` over the difficulty range.
    #[default]
    Builtin,
    /// SUMO's traffic on generated training networks (built by the CLI with
    /// `deltaplan-sumo`); `families` and the difficulty do not apply there, nor demonstration
    /// noise (SUMO's driver model records, and SUMO keeps vehicles on lane centrelines).
    Sumo,
}

impl Default for TrainScenarios {
    fn default() -> Self {
        TrainScenarios {
            families: Family::ALL.to_vec(),
            difficulty: Difficulty::default(),
            difficulty_mix: 1.0,
            world: TrainWorld::Builtin,
        }
    }
}

impl TrainScenarios {
    /// Checks ranges, naming the field at fault (`train_scenarios.<field>`).
    pub fn validate(&self) -> Result<()> {
        if self.families.is_empty() {
            return Err(LearnError::Config(
                "train_scenarios.families must name at least one scenario family".into(),
            ));
        }
        if !(0.0..=1.0).contains(&self.difficulty_mix) {
            return Err(LearnError::Config(format!(
                "train_scenarios.difficulty_mix = {} is out of range: allowed 0 to 1",
                self.difficulty_mix
            )));
        }
        self.difficulty
            .validate()
            .map_err(|e| LearnError::Config(format!("train_scenarios.difficulty: {e}")))
    }

    /// `n` training worlds drawing from this distribution; scenarios are a pure function of
    /// (`seed`, world index, episode number).
    pub fn batch_env(&self, sim: SimConfig, n: usize, seed: u64) -> BatchEnv {
        self.batch_env_part(sim, 0..n, seed)
    }

    /// The refinement's validation suite: `per_family` scenarios of every family, their
    /// difficulties spread evenly over the training range, with seeds of
    /// [`Split::Validation`] (no training episode and no evaluation suite plays them).
    pub fn validation_suite(&self, per_family: usize) -> Vec<ScenarioSpec> {
        let (easiest, hardest) = self.difficulty.training_range(self.difficulty_mix);
        let mut out = Vec::with_capacity(self.families.len() * per_family);
        for (fi, &family) in self.families.iter().enumerate() {
            for k in 0..per_family {
                out.push(ScenarioSpec {
                    family,
                    seed: Split::Validation.seed_base() + (fi * 1_000_003 + k) as u64,
                    difficulty: easiest.lerp(&hardest, (k as f32 + 0.5) / per_family as f32),
                });
            }
        }
        out
    }

    /// Worlds `worlds` of [`TrainScenarios::batch_env`]'s batch (a machine's share of them).
    pub fn batch_env_part(
        &self,
        sim: SimConfig,
        worlds: std::ops::Range<usize>,
        seed: u64,
    ) -> BatchEnv {
        BatchEnv::train_part(
            sim,
            worlds,
            seed,
            self.families.clone(),
            self.difficulty.training_range(self.difficulty_mix),
        )
    }
}
