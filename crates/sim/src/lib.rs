//! deltaplan-sim: a fast, deterministic, batched closed-loop driving simulator.
//!
//! Roads with lanes, traffic driven by IDM with scripted hard brakes and cut-ins, traffic
//! lights, oriented-box collisions, off-road and red-light checks, a privileged expert, and a
//! waypoint-tracking controller through which every planner drives. It knows nothing of
//! learning: planners hand it H waypoints per ego and step; it hands back observations,
//! rewards, termination/truncation flags and per-episode infraction records.
//!
//! Start at [`BatchEnv`] (N worlds stepped together) or [`World`] (one).

pub mod batch;
pub mod expert;
pub mod geom;
pub mod metrics;
pub mod obs;
pub mod render;
pub mod road;
pub mod scenario;
pub mod toy;
pub mod traffic;
pub mod vehicle;
pub mod world;

pub use batch::{BatchEnv, EnvSnapshot, StepBuffers};
pub use expert::{expert_plan, ExpertConfig};
pub use metrics::EpisodeStats;
pub use obs::{observe, OBS_DIM};
pub use scenario::{Difficulty, Family, RangeError, ScenarioSpec, Split};
pub use vehicle::{ControllerParams, VehicleParams};
pub use world::{EndReason, StepResult, World};

use serde::{Deserialize, Serialize};

/// Reward shaping in the style of CaRL: route-completion gain (percent of the route) times
/// soft penalties, plus a terminal penalty.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RewardConfig {
    /// Subtracted on collision, off-road, red light or being blocked.
    pub terminal_penalty: f32,
    /// Overspeed (fraction of the limit) at which the speeding factor reaches 0.
    pub speeding_tolerance: f32,
    /// Factor applied to progress made with the ego box outside the route lane.
    pub outside_lane_factor: f32,
    /// Progress made while the time to collision with the vehicle or obstacle ahead is below
    /// `ttc_threshold` seconds is multiplied by `ttc_factor` (CaRL: 0.5). 0 disables.
    pub ttc_threshold: f32,
    pub ttc_factor: f32,
}

impl Default for RewardConfig {
    fn default() -> Self {
        RewardConfig {
            terminal_penalty: 20.0,
            speeding_tolerance: 0.25,
            outside_lane_factor: 0.0,
            ttc_threshold: 0.0,
            ttc_factor: 0.5,
        }
    }
}

/// Everything about the simulation that is not the scenario.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimConfig {
    /// Step length, seconds (10 Hz by default).
    pub dt: f32,
    /// Number of planned waypoints H.
    pub horizon: usize,
    pub vehicle: VehicleParams,
    pub controller: ControllerParams,
    pub expert: ExpertConfig,
    pub reward: RewardConfig,
    /// The route counts as completed within this many metres of its end.
    pub route_end_tolerance: f32,
    /// Terminate as blocked after this many seconds without 0.5 m of progress.
    pub blocked_seconds: f32,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            dt: 0.1,
            horizon: 10,
            vehicle: VehicleParams::default(),
            controller: ControllerParams::default(),
            expert: ExpertConfig::default(),
            reward: RewardConfig::default(),
            route_end_tolerance: 3.0,
            blocked_seconds: 60.0,
        }
    }
}

/// A simulation setting outside its allowed range.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("sim field `{field}` = {value} is out of range: allowed {min} to {max}")]
pub struct SimConfigError {
    pub field: &'static str,
    pub value: f64,
    pub min: f64,
    pub max: f64,
}

impl SimConfig {
    /// Checks the fields a user is likely to set.
    pub fn validate(&self) -> Result<(), SimConfigError> {
        let checks: [(&'static str, f64, f64, f64); 6] = [
            ("dt", self.dt as f64, 0.01, 0.5),
            ("horizon", self.horizon as f64, 2.0, 64.0),
            (
                "controller.waypoint_dt",
                self.controller.waypoint_dt as f64,
                0.05,
                1.0,
            ),
            (
                "reward.terminal_penalty",
                self.reward.terminal_penalty as f64,
                0.0,
                1000.0,
            ),
            ("blocked_seconds", self.blocked_seconds as f64, 1.0, 3600.0),
            (
                "route_end_tolerance",
                self.route_end_tolerance as f64,
                0.0,
                50.0,
            ),
        ];
        for (field, value, min, max) in checks {
            if !(min..=max).contains(&value) {
                return Err(SimConfigError {
                    field,
                    value,
                    min,
                    max,
                });
            }
        }
        Ok(())
    }

    /// Length of one action (flattened waypoints).
    pub fn action_dim(&self) -> usize {
        2 * self.horizon
    }
}
