//! deltaplan-sim: a fast, deterministic, batched closed-loop driving simulator.
//!
//! Roads with lanes, traffic driven by IDM with scripted hard brakes and cut-ins, traffic
//! lights, oriented-box collisions, off-road and red-light checks, a privileged expert, and a
//! waypoint-tracking controller through which every planner drives. It knows nothing of
//! learning: planners hand it H waypoints per ego and step; it hands back observations,
//! rewards, termination/truncation flags and per-episode infraction records.
//!
//! Start at [`BatchEnv`] (N worlds stepped together, behind the [`VecEnv`] seam) or [`World`]
//! (one; [`World::step`] is one simulation step).
//!
//! Layers, bottom-up (a module imports only modules of lower layers):
//! 1. `config`, `spec`, `events`: configuration and plain value types;
//! 2. `geom`, `road`, `vehicle`, `traffic`, `reward`, `metrics`;
//! 3. `scenario`: generation of a [`Scenario`] value from a [`ScenarioSpec`];
//! 4. `world`: one world, reset from a [`Scenario`];
//! 5. `expert`, `obs`, `bev`, `render`: read a [`World`];
//! 6. `batch`: [`BatchEnv`]; 7. `env`: the [`VecEnv`] seam over it.

pub mod batch;
pub mod bev;
pub mod config;
pub mod displacement;
pub mod env;
pub mod events;
pub mod expert;
pub mod geom;
pub mod metrics;
pub mod obs;
pub mod render;
pub mod reward;
pub mod road;
pub mod scenario;
pub mod spec;
pub mod toy;
pub mod traffic;
pub mod vehicle;
pub mod world;

pub use batch::{observe_with, BatchEnv, EnvSnapshot, SnapshotError, StepBuffers};
pub use bev::{BevSpec, BevSpecError};
pub use config::{
    ControllerParams, ExpertConfig, RewardConfig, SimConfig, SimConfigError, VehicleParams,
};
pub use displacement::{DisplacementError, DisplacementSums};
pub use env::{ExpertEnv, ResumableEnv, VecEnv};
pub use events::{EndReason, StepEvents, StepResult};
pub use expert::expert_plan;
pub use metrics::{EpisodeStats, NuplanMetrics};
pub use obs::{observe, OBS_DIM};
pub use scenario::Scenario;
pub use spec::{Difficulty, Family, RangeError, ScenarioSpec, Split};
pub use world::World;
