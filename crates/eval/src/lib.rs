//! Closed-loop evaluation and the statistics of driving metrics.
//!
//! A policy is evaluated on a fixed list of scenarios (the same list for every policy, so
//! comparisons are paired), one episode each, deterministically. Per policy: the CARLA
//! Leaderboard 2.x driving score, route completion, infraction penalty, event rates (fraction of
//! episodes with at least one), nuPlan comfort pass rate and mean speed, each with a 95%
//! bootstrap confidence interval over scenarios; per family; and the paired difference between
//! two policies with its own bootstrap interval.
//!
//! This crate knows the simulator but not the learning code: a learned planner comes in as
//! anything implementing [`Planner`].

pub mod plot;
pub mod report;

use std::collections::BTreeMap;

use deltaplan_sim::batch::StepBuffers;
use deltaplan_sim::render::{render_svg, Trail};
use deltaplan_sim::{BatchEnv, EpisodeStats, Family, ScenarioSpec, SimConfig, World, OBS_DIM};
use rand::{RngExt, SeedableRng};
use rand_pcg::Pcg64;
use serde::{Deserialize, Serialize};

/// Errors of evaluation.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("the planner failed: {0}")]
    Planner(String),
    #[error("nothing to evaluate: the scenario list is empty")]
    Empty,
    #[error("paired comparison needs the same scenarios in the same order ({0})")]
    Unpaired(String),
    #[error("cannot write {path}: {reason}")]
    Io { path: String, reason: String },
}

pub type Result<T> = std::result::Result<T, EvalError>;

/// A planner that maps a batch of observations `[B, OBS_DIM]` to plans `[B, 2H]`.
pub trait Planner {
    fn plan(&mut self, obs: &[f32], out: &mut [f32]) -> std::result::Result<(), String>;
}

impl<F: FnMut(&[f32], &mut [f32]) -> std::result::Result<(), String>> Planner for F {
    fn plan(&mut self, obs: &[f32], out: &mut [f32]) -> std::result::Result<(), String> {
        self(obs, out)
    }
}

/// Who drives.
pub enum Driver<'a> {
    /// The privileged expert.
    Expert,
    /// A planner that sees only observations.
    Planner(&'a mut dyn Planner),
}

/// Runs every scenario once, in parallel worlds, and returns their records in input order.
pub fn closed_loop(
    sim: SimConfig,
    specs: &[ScenarioSpec],
    driver: &mut Driver,
) -> Result<Vec<EpisodeStats>> {
    if specs.is_empty() {
        return Err(EvalError::Empty);
    }
    let n = specs.len();
    let mut env = BatchEnv::fixed(sim, specs.to_vec());
    let mut buf = StepBuffers::new(n);
    let mut obs = vec![0.0; n * OBS_DIM];
    let mut plans = vec![0.0; n * sim.action_dim()];
    env.observe(&mut obs);
    while !env.all_idle() {
        match driver {
            Driver::Expert => env.expert_actions(&mut plans),
            Driver::Planner(p) => p.plan(&obs, &mut plans).map_err(EvalError::Planner)?,
        }
        env.step(&plans, &mut buf);
        obs.copy_from_slice(&buf.obs);
    }
    Ok((0..n).map(|i| *env.finished(i)).collect())
}

/// Drives one scenario and renders its last frame with the driven path as SVG.
pub fn render_episode(
    sim: SimConfig,
    spec: ScenarioSpec,
    driver: &mut Driver,
    title: &str,
) -> Result<(EpisodeStats, String)> {
    let mut w = World::new(sim);
    w.reset(spec);
    let mut trail = Trail::default();
    trail.record(&w);
    let mut obs = vec![0.0; OBS_DIM];
    let mut plan = vec![0.0; sim.action_dim()];
    loop {
        match driver {
            Driver::Expert => deltaplan_sim::expert_plan(&w, &mut plan),
            Driver::Planner(p) => {
                deltaplan_sim::observe(&w, &mut obs);
                p.plan(&obs, &mut plan).map_err(EvalError::Planner)?;
            }
        }
        let r = w.step(&plan);
        trail.record(&w);
        if r.end != deltaplan_sim::EndReason::Running {
            break;
        }
    }
    let svg = render_svg(&w, &trail, title, false);
    Ok((w.stats, svg))
}

/// A mean with a 95% confidence interval.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    pub mean: f64,
    pub lo: f64,
    pub hi: f64,
}

/// The metrics reported per policy, split and family.
pub const METRICS: [&str; 8] = [
    "driving_score",
    "route_completion",
    "infraction_penalty",
    "collision_rate",
    "offroad_rate",
    "red_light_rate",
    "comfort_pass_rate",
    "mean_speed",
];

/// Value of metric `name` for one episode (driving score and route completion 0-100, rates as
/// 0/1 indicators so their means are fractions of episodes).
pub fn metric(e: &EpisodeStats, name: &str) -> f64 {
    let b = |x: bool| f64::from(u8::from(x));
    match name {
        "driving_score" => f64::from(e.driving_score()),
        "route_completion" => f64::from(e.route_completion),
        "infraction_penalty" => f64::from(e.infraction_penalty()),
        "collision_rate" => b(e.had_collision()),
        "offroad_rate" => b(e.offroad > 0),
        "red_light_rate" => b(e.red_lights > 0),
        "comfort_pass_rate" => b(e.comfort_pass()),
        "mean_speed" => f64::from(e.mean_speed()),
        // Fraction of episodes with a collision or an off-road event.
        "failure_rate" => b(e.had_collision() || e.offroad > 0),
        _ => f64::NAN,
    }
}

const BOOTSTRAP_SAMPLES: usize = 2000;

/// Percentile bootstrap 95% interval of the mean of `values` (resampling indices with a fixed
/// seed, so reports are reproducible).
pub fn bootstrap_mean(values: &[f64], seed: u64) -> Estimate {
    let n = values.len();
    if n == 0 {
        return Estimate {
            mean: f64::NAN,
            lo: f64::NAN,
            hi: f64::NAN,
        };
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    let mut rng = Pcg64::seed_from_u64(seed);
    let mut means: Vec<f64> = (0..BOOTSTRAP_SAMPLES)
        .map(|_| (0..n).map(|_| values[rng.random_range(0..n)]).sum::<f64>() / n as f64)
        .collect();
    means.sort_by(f64::total_cmp);
    Estimate {
        mean,
        lo: means[(0.025 * BOOTSTRAP_SAMPLES as f64) as usize],
        hi: means[((0.975 * BOOTSTRAP_SAMPLES as f64) as usize).min(BOOTSTRAP_SAMPLES - 1)],
    }
}

/// Every metric of a set of episodes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub episodes: usize,
    pub metrics: BTreeMap<String, Estimate>,
}

/// Summary of `episodes`, and of each family separately.
pub fn summarize(episodes: &[EpisodeStats]) -> (Summary, BTreeMap<String, Summary>) {
    let one = |eps: &[&EpisodeStats]| Summary {
        episodes: eps.len(),
        metrics: METRICS
            .iter()
            .chain(&["failure_rate"])
            .enumerate()
            .map(|(k, &m)| {
                let v: Vec<f64> = eps.iter().map(|e| metric(e, m)).collect();
                (m.to_string(), bootstrap_mean(&v, 17 + k as u64))
            })
            .collect(),
    };
    let all: Vec<&EpisodeStats> = episodes.iter().collect();
    let mut families = BTreeMap::new();
    for f in Family::ALL {
        let eps: Vec<&EpisodeStats> = episodes.iter().filter(|e| e.family == f).collect();
        if !eps.is_empty() {
            families.insert(f.name().to_string(), one(&eps));
        }
    }
    (one(&all), families)
}

/// Paired difference `b - a` of `metric` over the same scenarios, with a bootstrap interval
/// resampling scenarios (each resample keeps the pairs together).
pub fn paired_difference(a: &[EpisodeStats], b: &[EpisodeStats], name: &str) -> Result<Estimate> {
    if a.len() != b.len() {
        return Err(EvalError::Unpaired(format!(
            "{} vs {} episodes",
            a.len(),
            b.len()
        )));
    }
    if let Some((x, y)) = a
        .iter()
        .zip(b)
        .find(|(x, y)| x.seed != y.seed || x.family != y.family)
    {
        return Err(EvalError::Unpaired(format!(
            "scenario {:?}/{} paired with {:?}/{}",
            x.family, x.seed, y.family, y.seed
        )));
    }
    let d: Vec<f64> = a
        .iter()
        .zip(b)
        .map(|(x, y)| metric(y, name) - metric(x, name))
        .collect();
    Ok(bootstrap_mean(&d, 99))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_interval_brackets_mean_and_shrinks_with_n() {
        let small: Vec<f64> = (0..20).map(|i| (i % 2) as f64).collect();
        let large: Vec<f64> = (0..2000).map(|i| (i % 2) as f64).collect();
        let s = bootstrap_mean(&small, 1);
        let l = bootstrap_mean(&large, 1);
        assert_eq!(s.mean, 0.5);
        assert!(s.lo < 0.5 && s.hi > 0.5);
        // The interval of a mean of Bernoulli(0.5) scales like 1/sqrt(n): 10x narrower at 100x n.
        let ratio = (s.hi - s.lo) / (l.hi - l.lo);
        assert!(ratio > 6.0 && ratio < 15.0, "{ratio}");
        // A constant sample has a zero-width interval.
        let c = bootstrap_mean(&[3.0; 10], 1);
        assert_eq!((c.lo, c.mean, c.hi), (3.0, 3.0, 3.0));
    }

    #[test]
    fn paired_difference_refuses_unpaired_lists() {
        let a = EpisodeStats {
            seed: 1,
            route_completion: 50.0,
            ..Default::default()
        };
        let b = EpisodeStats {
            seed: 1,
            route_completion: 80.0,
            ..Default::default()
        };
        let d = paired_difference(&[a], &[b], "route_completion").unwrap();
        assert_eq!((d.mean, d.lo, d.hi), (30.0, 30.0, 30.0));
        let c = EpisodeStats { seed: 2, ..b };
        assert!(paired_difference(&[a], &[c], "route_completion").is_err());
    }
}
