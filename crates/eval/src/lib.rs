//! Closed-loop evaluation and the statistics of driving metrics.
//!
//! A policy is evaluated on a fixed list of scenarios (the same list for every policy, so
//! comparisons are paired), one episode each, deterministically. Per policy: every [`Metric`]
//! of the registry (CARLA Leaderboard 2.x driving score, route completion, infraction penalty,
//! event and failure rates, nuPlan comfort pass rate, mean speed), each with a 95% bootstrap
//! confidence interval over scenarios; per family; and the paired difference between two
//! policies with its own bootstrap interval.
//!
//! Modules, bottom up: [`metric`] (the registry and the one definition of failure), [`stats`]
//! (bootstrap, summaries, paired differences), [`families`] (per-family differences with
//! their flags, failure types), [`drive`] (closed-loop episodes), [`plot`] (SVG charts),
//! [`episode`] (one scenario driven by several policies: traces, a shared crop, the step where
//! they diverge, filmstrips, speed and acceleration), [`report`] (typed summaries ->
//! `report.json`, `report.md`, figures), [`formats`] (the same episodes as a CARLA
//! Leaderboard 2.x results file and a nuPlan aggregator table).
//!
//! This crate knows the simulator but not the learning code: a learned planner comes in as
//! anything implementing [`Planner`].

pub mod drive;
pub mod episode;
pub mod families;
pub mod formats;
pub mod metric;
pub mod plot;
pub mod report;
pub mod stats;

pub use deltaplan_sim::{DisplacementError, DisplacementSums};
pub use drive::{closed_loop, drive_to_the_end, Driver, Planner, PlannerError, WithRaster};
pub use episode::{render_episode, trace_episode, Comparison, EpisodeTrace, RenderedEpisode};
pub use metric::{Metric, PerMetric, Unit, UnknownMetric};
pub use report::Policy;
pub use stats::{
    bootstrap_mean, fixed_failures, paired_difference, paired_differences, summarize, Estimate,
    Summaries, Summary,
};

/// Errors of evaluation.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("the planner failed")]
    Planner(#[from] PlannerError),
    #[error("nothing to evaluate: the scenario list is empty")]
    Empty,
    #[error("the environment failed: {0}")]
    Environment(String),
    #[error("the planner's raster cannot be rendered: {0}")]
    Raster(#[from] deltaplan_sim::BevSpecError),
    #[error("paired comparison needs the same scenarios in the same order ({0})")]
    Unpaired(String),
    #[error("cannot write {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, EvalError>;
