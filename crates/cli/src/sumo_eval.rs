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
use deltaplan_sumo::maps::Map;
use deltaplan_sumo::{NetContext, SumoConfig, SumoEnv, SumoScenarios};

use crate::config::Config;
use crate::pipeline::with_driver;
use crate::sumo_world::{generated_networks, networks_dir, EVAL_NETWORKS};

/// The demand seed of the CARLA towns' trips (held out like the generated networks').
const MAP_DEMAND_SEED: u64 = 1_000_003;

/// Evaluates `policy` on `split` in SUMO: `eval.per_family` x 5 episodes (as many as the
/// built-in suite), their seeds from the split's range, alternating between the networks:
/// the held-out generated ones, or `maps` (`resco:NAME`, `carla:TOWN`) when given; the hard
/// split doubles the demand made here (RESCO keeps its own). Writes
/// OUT/eval/sumo_SPLIT_POLICY.json (`..._MAP+MAP.json` for maps) and prints the scores per
/// network.
pub fn evaluate(
    cfg: &Config,
    out: &Path,
    policy: Policy,
    split: Split,
    maps: &[String],
) -> Result<PathBuf> {
    let bins = SumoBinaries::locate_default()?;
    let t = Instant::now();
    let mut sumo_cfg = SumoConfig::default();
    if split == Split::Hard {
        sumo_cfg.vehicles_per_hour *= 2;
    }
    let dir = networks_dir(out);
    let maps = maps
        .iter()
        .map(|m| Ok(Map::parse(m)?))
        .collect::<Result<Vec<_>>>()?;
    let nets = if maps.is_empty() {
        generated_networks(&bins, out, &EVAL_NETWORKS, sumo_cfg.vehicles_per_hour)?
    } else {
        maps.iter()
            .map(|m| {
                let files = m.prepare(&bins, &dir, MAP_DEMAND_SEED, sumo_cfg.vehicles_per_hour)?;
                Ok(Arc::new(NetContext::load(files)?))
            })
            .collect::<Result<Vec<_>>>()
            .context("cannot prepare the SUMO evaluation networks")?
    };
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
    let suffix = file_suffix(&maps);
    let path = out.join("eval").join(format!(
        "sumo_{}_{}{suffix}.json",
        split.name(),
        policy.name()
    ));
    std::fs::create_dir_all(out.join("eval"))?;
    write_atomic(&path, serde_json::to_string(&episodes)?.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    let table = per_network_table(&episodes, &nets);
    write_atomic(&path.with_extension("md"), table.as_bytes())
        .with_context(|| format!("cannot write {}", path.with_extension("md").display()))?;
    println!(
        "{} on SUMO {} ({} episodes, {:.1} s):\n{table}",
        policy.name(),
        split.name(),
        episodes.len(),
        t.elapsed().as_secs_f64()
    );
    Ok(path)
}

/// The scores per network (world `i` drove on `nets[i % len]`) and over all, as a Markdown
/// table.
fn per_network_table(
    episodes: &[deltaplan_sim::metrics::EpisodeStats],
    nets: &[Arc<NetContext>],
) -> String {
    let mut t = String::from(
        "| network | episodes | driving score | route completion | failures | nuPlan score |\n|---|---:|---:|---:|---:|---:|\n",
    );
    let mut row = |name: &str, eps: &[deltaplan_sim::metrics::EpisodeStats]| {
        let s = deltaplan_eval::summarize(eps).overall;
        t.push_str(&format!(
            "| {name} | {} | {:.1} | {:.1} | {:.1}% | {:.1} |\n",
            eps.len(),
            s[Metric::DrivingScore].mean,
            s[Metric::RouteCompletion].mean,
            100.0 * s[Metric::FailureRate].mean,
            s[Metric::NuplanScore].mean
        ));
    };
    for (k, net) in nets.iter().enumerate() {
        let eps: Vec<_> = episodes
            .iter()
            .enumerate()
            .filter(|(i, _)| i % nets.len() == k)
            .map(|(_, e)| *e)
            .collect();
        if !eps.is_empty() {
            row(&net.files.name, &eps);
        }
    }
    row("all", episodes);
    t
}

/// `_NAME_NAME...` for up to three maps; for more, the first three, how many more, and a hash
/// of the whole list (file names stay short and distinct).
fn file_suffix(maps: &[Map]) -> String {
    let names: Vec<String> = maps.iter().map(Map::name).collect();
    if names.len() <= 3 {
        return names.iter().map(|n| format!("_{n}")).collect();
    }
    let hash = names.iter().fold(0u64, |h, n| {
        n.bytes()
            .fold(deltaplan_stdx::seed::mix64(h ^ 0x2c), |h, b| {
                deltaplan_stdx::seed::mix64(h ^ u64::from(b))
            })
    });
    format!(
        "_{}_and_{}_more_{:08x}",
        names[..3].join("_"),
        names.len() - 3,
        hash as u32
    )
}
