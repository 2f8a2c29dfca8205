//! Where an iteration's wall time goes: the refinement loop charges each stretch of work to a
//! phase, so a run can say whether the simulator, the frozen planner, the residual's forward
//! passes or the PPO update is the cost to cut.

use std::time::Instant;

use serde::{Deserialize, Serialize};

/// Seconds spent per phase (one iteration, or summed over a run).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PhaseSeconds {
    /// Stepping the worlds and the reward bookkeeping.
    pub env: f64,
    /// The frozen planner's forward pass and the policy input built from it.
    pub planner_forward: f64,
    /// The residual actor-critic's forward passes during the rollout (sampling, values).
    pub policy_forward: f64,
    /// GAE.
    pub gae: f64,
    /// The PPO update (forward, backward, optimiser).
    pub update: f64,
    /// The refined planner driving the validation suite (policy selection).
    pub validation: f64,
}

impl PhaseSeconds {
    /// Sum of every phase.
    pub fn total(&self) -> f64 {
        self.env
            + self.planner_forward
            + self.policy_forward
            + self.gae
            + self.update
            + self.validation
    }

    /// Phase-wise sum.
    pub fn add(&mut self, other: &PhaseSeconds) {
        self.env += other.env;
        self.planner_forward += other.planner_forward;
        self.policy_forward += other.policy_forward;
        self.gae += other.gae;
        self.update += other.update;
        self.validation += other.validation;
    }
}

/// A stopwatch whose laps are charged to phases.
pub(crate) struct PhaseClock {
    last: Instant,
    pub(crate) seconds: PhaseSeconds,
}

impl PhaseClock {
    pub(crate) fn start() -> Self {
        PhaseClock {
            last: Instant::now(),
            seconds: PhaseSeconds::default(),
        }
    }

    /// Charges the time since the previous lap to the phase `pick` selects.
    pub(crate) fn lap(&mut self, pick: fn(&mut PhaseSeconds) -> &mut f64) {
        let now = Instant::now();
        *pick(&mut self.seconds) += now.duration_since(self.last).as_secs_f64();
        self.last = now;
    }
}
