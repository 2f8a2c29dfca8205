//! SUMO as the stages' second world: the generated networks refinement trains on and the
//! held-out ones evaluation drives on, and the training worlds over them.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use deltaplan_sumo::locate::SumoBinaries;
use deltaplan_sumo::netgen::{generate, NetKind};
use deltaplan_sumo::{NetContext, SumoConfig, SumoEnv, SumoScenarios};

use crate::config::Config;

/// The held-out evaluation networks: seeds far from any other use, a spider and a grid.
pub const EVAL_NETWORKS: [(NetKind, u64); 2] =
    [(NetKind::Spider, 1_000_001), (NetKind::Grid, 1_000_002)];

/// The networks refinement in SUMO trains on: two grids and two spiders whose seeds no
/// evaluation network uses.
pub const TRAIN_NETWORKS: [(NetKind, u64); 4] = [
    (NetKind::Grid, 1),
    (NetKind::Spider, 2),
    (NetKind::Grid, 3),
    (NetKind::Spider, 4),
];

/// Where a run keeps its SUMO networks (generated or converted): OUT/sumo/networks.
pub fn networks_dir(out: &Path) -> std::path::PathBuf {
    out.join("sumo").join("networks")
}

/// Generates `networks` (once; existing files are reused) into [`networks_dir`] and loads
/// them.
pub fn generated_networks(
    bins: &SumoBinaries,
    out: &Path,
    networks: &[(NetKind, u64)],
    vehicles_per_hour: u32,
) -> Result<Vec<Arc<NetContext>>> {
    let dir = networks_dir(out);
    networks
        .iter()
        .map(|&(kind, seed)| {
            let files = generate(bins, &dir, kind, seed, vehicles_per_hour)?;
            Ok(Arc::new(NetContext::load(files)?))
        })
        .collect::<Result<Vec<_>>>()
        .context("cannot prepare the SUMO networks")
}

/// `cfg.refine.num_envs` training worlds in SUMO on [`TRAIN_NETWORKS`] (world `i` on network
/// `i % 4`), their episode seeds drawn from the training split with `seed`.
pub fn training_env(cfg: &Config, out: &Path, seed: u64) -> Result<SumoEnv> {
    let bins = SumoBinaries::locate_default()?;
    let sumo_cfg = SumoConfig::default();
    let nets = generated_networks(&bins, out, &TRAIN_NETWORKS, sumo_cfg.vehicles_per_hour)?;
    Ok(SumoEnv::new(
        cfg.sim,
        sumo_cfg,
        &nets,
        &bins,
        SumoScenarios::Train { seed },
        cfg.refine.num_envs,
    )?)
}
