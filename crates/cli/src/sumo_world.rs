//! SUMO as the stages' second world: the generated networks the recording and refinement
//! train on and the held-out ones evaluation drives on, the demonstrations SUMO's driver model
//! records on the first, and refinement's training worlds over them.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use deltaplan_eval::Metric;
use deltaplan_learn::dataset::{Dataset, EpisodeInfo, Recording};
use deltaplan_learn::TrainWorld;
use deltaplan_sim::{Difficulty, Family, OBS_DIM};
use deltaplan_sumo::demo::{DemoRun, Demonstrator};
use deltaplan_sumo::locate::SumoBinaries;
use deltaplan_sumo::netgen::{generate, NetKind};
use deltaplan_sumo::{NetContext, SumoConfig, SumoEnv, SumoScenarios};

use crate::config::Config;

/// The held-out evaluation networks: seeds far from any other use, a spider and a grid.
pub const EVAL_NETWORKS: [(NetKind, u64); 2] =
    [(NetKind::Spider, 1_000_001), (NetKind::Grid, 1_000_002)];

/// The networks the recording and refinement in SUMO train on: two grids and two spiders
/// whose seeds no evaluation network uses.
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

/// SUMO episodes carry no scenario family of their own: they are labelled `Intersection`
/// (signalised junction networks), as in their evaluation records.
const SUMO_FAMILY: Family = Family::Intersection;

/// Demonstrations by SUMO's own driver model on [`TRAIN_NETWORKS`] (`deltaplan_sumo::demo`):
/// `demos.n_envs` worlds (world `i` on network `i % 4`), each driving `demos.steps` steps of
/// episodes whose seeds refinement's world `i` draws too (the training split, `rec.seed`). A
/// sample per state whose 2 s of future were driven, labelled with them; `on_step` is called
/// after every step of any world. The whole [`Recording`] is stored, so `train-sft` reads it
/// as any other.
pub fn record_demonstrations(
    rec: &Recording,
    out: &Path,
    on_step: &(dyn Fn() + Sync),
) -> Result<Dataset> {
    rec.validate()?;
    if rec.scenarios.world != TrainWorld::Sumo {
        bail!("SUMO's demonstrations need train_scenarios.world = \"sumo\"");
    }
    let bins = SumoBinaries::locate_default()?;
    let sumo = SumoConfig::default();
    let nets = generated_networks(&bins, out, &TRAIN_NETWORKS, sumo.vehicles_per_hour)?;
    let demonstrator = Demonstrator {
        sim: rec.sim,
        sumo,
        nets: &nets,
        bins: &bins,
    };
    let run = DemoRun {
        seed: rec.seed,
        worlds: rec.demos.n_envs,
        steps: rec.demos.steps,
    };
    let episodes = demonstrator
        .record(&run, on_step)
        .context("cannot record SUMO's demonstrations")?;
    let total: usize = episodes.iter().map(|e| e.samples()).sum();
    let a = rec.sim.action_dim();
    let mut ds = Dataset {
        config: rec.clone(),
        obs: Vec::with_capacity(total * OBS_DIM),
        actions: Vec::with_capacity(total * a),
        executed: Vec::with_capacity(total * a),
        family: Vec::with_capacity(total),
        episode: Vec::with_capacity(total),
        step: Vec::with_capacity(total),
        bev: None,
        episodes: Vec::new(),
    };
    let family = Family::ALL
        .iter()
        .position(|&f| f == SUMO_FAMILY)
        .unwrap_or(0) as u8;
    for e in episodes.iter().filter(|e| e.samples() > 0) {
        let id = ds.episodes.len() as u32;
        ds.episodes.push(EpisodeInfo {
            family: SUMO_FAMILY,
            seed: e.seed,
            difficulty: Difficulty::default(),
            env: e.world as u32,
            noisy: false,
        });
        ds.obs.extend_from_slice(&e.obs);
        ds.actions.extend_from_slice(&e.labels);
        ds.executed.extend_from_slice(&e.labels);
        ds.family.extend(std::iter::repeat_n(family, e.samples()));
        ds.episode.extend(std::iter::repeat_n(id, e.samples()));
        ds.step.extend(0..e.samples() as u32);
    }
    let ended: Vec<_> = episodes
        .iter()
        .filter(|e| e.stats.end != deltaplan_sim::EndReason::Running)
        .map(|e| e.stats)
        .collect();
    if !ended.is_empty() {
        let s = deltaplan_eval::summarize(&ended).overall;
        tracing::info!(
            "SUMO's driver model on the training networks: {} episodes ended, driving score {:.1}, route completion {:.1}, failures {:.1}%",
            ended.len(),
            s[Metric::DrivingScore].mean,
            s[Metric::RouteCompletion].mean,
            100.0 * s[Metric::FailureRate].mean
        );
    }
    Ok(ds)
}
