//! Driving scenarios in closed loop: every scenario once, with the privileged expert or a
//! planner that sees only observations.

use deltaplan_sim::batch::StepBuffers;
use deltaplan_sim::env::ExpertEnv;
use deltaplan_sim::{BatchEnv, BevSpec, EpisodeStats, ScenarioSpec, SimConfig};

use crate::{EvalError, Result};

/// A planner that maps a batch of observations `[B, obs_dim]` to plans `[B, 2H]`.
pub trait Planner {
    fn plan(&mut self, obs: &[f32], out: &mut [f32]) -> std::result::Result<(), PlannerError>;

    /// The raster it reads after the vector (`obs_dim = OBS_DIM + raster.len()`, rows as
    /// [`deltaplan_sim::observe_with`] writes them); `None`: the vector only.
    fn bev_observation(&self) -> Option<BevSpec> {
        None
    }
}

/// A planner (any [`Planner`], e.g. a closure) that reads a raster after the vector.
pub struct WithRaster<P> {
    pub planner: P,
    pub raster: BevSpec,
}

impl<P: Planner> Planner for WithRaster<P> {
    fn plan(&mut self, obs: &[f32], out: &mut [f32]) -> std::result::Result<(), PlannerError> {
        self.planner.plan(obs, out)
    }

    fn bev_observation(&self) -> Option<BevSpec> {
        Some(self.raster)
    }
}

impl<F: FnMut(&[f32], &mut [f32]) -> std::result::Result<(), PlannerError>> Planner for F {
    fn plan(&mut self, obs: &[f32], out: &mut [f32]) -> std::result::Result<(), PlannerError> {
        self(obs, out)
    }
}

/// Why a planner could not plan: the planner's own error, kept whole (its message and its
/// sources), whatever crate it comes from.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct PlannerError(Box<dyn std::error::Error + Send + Sync>);

impl PlannerError {
    /// Wraps any error (or a message).
    pub fn new(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        PlannerError(error.into())
    }

    /// The planner's own error, for callers that know its type (`downcast_ref`).
    pub fn get_ref(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self.0.as_ref()
    }
}

/// Who drives.
pub enum Driver<'a> {
    /// The privileged expert.
    Expert,
    /// A planner that sees only observations.
    Planner(&'a mut dyn Planner),
}

impl Driver<'_> {
    /// The raster the driver's observations carry, if any.
    pub fn bev_observation(&self) -> Option<BevSpec> {
        match self {
            Driver::Expert => None,
            Driver::Planner(p) => p.bev_observation(),
        }
    }
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
    let env = BatchEnv::fixed(sim, specs.to_vec());
    let mut env = match driver.bev_observation() {
        Some(raster) => env.with_bev_observation(raster)?,
        None => env,
    };
    drive_to_the_end(&mut env, driver)
}

/// The evaluation loop over the environment seam: drives every world of `env` (a batch over a
/// fixed scenario list, which goes idle when its episode ends) until all are idle, and returns
/// the episode records in world order. Any simulator that implements [`ExpertEnv`] is evaluated
/// by exactly this loop.
pub fn drive_to_the_end<E: ExpertEnv + ?Sized>(
    env: &mut E,
    driver: &mut Driver,
) -> Result<Vec<EpisodeStats>> {
    let (n, od, ad) = (env.num_envs(), env.obs_dim(), env.action_dim());
    let mut buf = StepBuffers::for_env(env);
    let mut obs = vec![0.0; n * od];
    let mut plans = vec![0.0; n * ad];
    // The planner sees only the worlds still driving (episodes differ in length by 2-3x, so
    // planning for idle worlds would double its work); a plan depends on its own row only.
    let mut active: Vec<usize> = (0..n).collect();
    let (mut active_obs, mut active_plans) = (obs.clone(), plans.clone());
    env.observe(&mut obs);
    while !env.all_idle() {
        match driver {
            Driver::Expert => env.expert_actions(&mut plans),
            Driver::Planner(p) => {
                let m = active.len();
                for (k, &i) in active.iter().enumerate() {
                    active_obs[k * od..(k + 1) * od].copy_from_slice(&obs[i * od..(i + 1) * od]);
                }
                p.plan(&active_obs[..m * od], &mut active_plans[..m * ad])?;
                for (k, &i) in active.iter().enumerate() {
                    plans[i * ad..(i + 1) * ad]
                        .copy_from_slice(&active_plans[k * ad..(k + 1) * ad]);
                }
            }
        }
        env.step(&plans, &mut buf);
        if let Some(fault) = env.fault() {
            return Err(EvalError::Environment(fault));
        }
        obs.copy_from_slice(&buf.obs);
        active.retain(|&i| !(buf.terminated[i] || buf.truncated[i]));
    }
    Ok((0..n).map(|i| *env.finished(i)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltaplan_sim::{Difficulty, Family, Split};
    use std::error::Error;

    #[test]
    fn a_planner_error_keeps_its_message_and_type() {
        let specs = Split::Eval.suite(&[Family::Curvy], 1, Difficulty::default());
        let mut broken = |_: &[f32], _: &mut [f32]| -> std::result::Result<(), PlannerError> {
            Err(PlannerError::new(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "weights missing",
            )))
        };
        let err = closed_loop(
            SimConfig::default(),
            &specs,
            &mut Driver::Planner(&mut broken),
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "the planner failed");
        let source = err.source().expect("the planner's error is the source");
        assert_eq!(source.to_string(), "weights missing");
        let io = source
            .downcast_ref::<PlannerError>()
            .and_then(|p| p.get_ref().downcast_ref::<std::io::Error>());
        assert_eq!(io.map(|e| e.kind()), Some(std::io::ErrorKind::NotFound));
    }
}
