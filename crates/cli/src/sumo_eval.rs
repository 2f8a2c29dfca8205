//! `deltaplan evaluate --world sumo`: a policy evaluated in SUMO on networks no planner was
//! trained on (the transfer table's numbers), through the same evaluation loop as the
//! built-in world (`drive_to_the_end` over the environment seam).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use deltaplan_eval::{Metric, Policy};
use deltaplan_sim::Split;
use deltaplan_stdx::fs::write_atomic;
use deltaplan_sumo::locate::SumoBinaries;
use deltaplan_sumo::netgen::{generate, NetKind};
use deltaplan_sumo::{NetContext, SumoConfig, SumoEnv, SumoScenarios};

use crate::config::Config;
use crate::pipeline::with_driver;

/// The held-out evaluation networks: seeds far from any other use, a spider and a grid.
pub const EVAL_NETWORKS: [(NetKind, u64); 2] =
    [(NetKind::Spider, 1_000_001), (NetKind::Grid, 1_000_002)];

/// Evaluates `policy` on `split` in SUMO: `eval.per_family` x 5 episodes (as many as the
/// built-in suite), their seeds from the split's range, alternating between the held-out
/// networks; the hard split doubles the demand. Writes OUT/eval/sumo_SPLIT_POLICY.json.
pub fn evaluate(cfg: &Config, out: &Path, policy: Policy, split: Split) -> Result<PathBuf> {
    let bins = SumoBinaries::locate_default()?;
    let t = Instant::now();
    let mut sumo_cfg = SumoConfig::default();
    if split == Split::Hard {
        sumo_cfg.vehicles_per_hour *= 2;
    }
    let dir = out.join("sumo").join("networks");
    let nets = EVAL_NETWORKS
        .iter()
        .map(|&(kind, seed)| {
            let files = generate(&bins, &dir, kind, seed, sumo_cfg.vehicles_per_hour)?;
            Ok(Arc::new(NetContext::load(files)?))
        })
        .collect::<Result<Vec<_>>>()
        .context("cannot prepare the SUMO evaluation networks")?;
    let n = cfg.eval.per_family * 5;
    let seeds: Vec<u64> = (0..n as u64).map(|k| split.seed_base() + k).collect();
    let episodes = with_driver(cfg, out, policy, |d| {
        if d.bev_observation().is_some() {
            anyhow::bail!(
                "the SUMO world does not draw BEV rasters yet: evaluate this raster planner in \
                 the built-in world (without --world sumo)"
            );
        }
        let mut env = SumoEnv::new(
            cfg.sim,
            sumo_cfg.clone(),
            &nets,
            &bins,
            SumoScenarios::Fixed(seeds.clone()),
            n,
        )?;
        Ok(deltaplan_eval::drive::drive_to_the_end(&mut env, d)?)
    })?;
    let path = out
        .join("eval")
        .join(format!("sumo_{}_{}.json", split.name(), policy.name()));
    std::fs::create_dir_all(out.join("eval"))?;
    write_atomic(&path, serde_json::to_string(&episodes)?.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    let s = deltaplan_eval::summarize(&episodes).overall;
    tracing::info!(
        "{} on SUMO {}: driving score {:.1}, route completion {:.1}, failures {:.1}%, nuPlan score {:.1} ({} episodes, {:.1} s)",
        policy.name(),
        split.name(),
        s[Metric::DrivingScore].mean,
        s[Metric::RouteCompletion].mean,
        100.0 * s[Metric::FailureRate].mean,
        s[Metric::NuplanScore].mean,
        episodes.len(),
        t.elapsed().as_secs_f64()
    );
    Ok(path)
}
