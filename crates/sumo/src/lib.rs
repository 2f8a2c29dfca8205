//! deltaplan-sumo: SUMO, a traffic simulator nobody here wrote, as a second world behind
//! deltaplan's environment seam ([`deltaplan_sim::VecEnv`], [`deltaplan_sim::ExpertEnv`]).
//!
//! SUMO runs as separate processes (`sumo --remote-port`), one per world, driven over its
//! TraCI protocol from Rust. SUMO moves its own traffic (car following, lane changes, traffic
//! light programs, its routes); the ego is driven by deltaplan's waypoint controller and
//! bicycle model, and SUMO is told its pose every step. For demonstrations SUMO's own driver
//! model drives the ego instead and deltaplan records what it did (`demo`).
//!
//! Layers, bottom-up: `locate`, `traci`, `net`; `process`, `netgen`, `maps`; `world` (one episode in
//! one SUMO); `env` ([`SumoEnv`], N worlds); `demo` (SUMO's driver as the demonstrator).

pub mod demo;
pub mod env;
pub mod locate;
pub mod maps;
pub mod net;
pub mod netgen;
pub mod process;
pub mod traci;
pub mod world;

pub use env::{StartFailure, SumoEnv, SumoScenarios};
pub use world::{NetContext, SumoConfig, SumoDriver, SumoWorld, SUMO_DRIVER};
