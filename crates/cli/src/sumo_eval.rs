//! Evaluation in SUMO (`deltaplan evaluate --world sumo`, and the report of a run trained in
//! SUMO): a driver on networks no planner was trained on, through the same evaluation loop as
//! the built-in world (`drive_to_the_end` over the environment seam), or SUMO's own driver
//! model on the same episodes. The caller hands in the run's driver (`pipeline` loads it), so
//! this module does not depend on `pipeline`, which uses it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use deltaplan_eval::{Driver, Metric, Policy};
use deltaplan_sim::{EpisodeStats, Split};
use deltaplan_stdx::fs::write_atomic;
use deltaplan_sumo::demo::Demonstrator;
use deltaplan_sumo::locate::SumoBinaries;
use deltaplan_sumo::maps::Map;
use deltaplan_sumo::{NetContext, SumoConfig, SumoEnv, SumoScenarios};

use crate::config::Config;
use crate::sumo_world::{generated_networks, networks_dir, EVAL_NETWORKS};

/// The demand seed of the CARLA towns' trips (held out like the generated networks').
const MAP_DEMAND_SEED: u64 = 1_000_003;

/// Who drives the ego in a SUMO evaluation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SumoEgo {
    /// One of the run's policies through deltaplan's controller: the route-following expert
    /// (`SumoWorld::expert_plan`), the SFT or the refined planner.
    Policy(Policy),
    /// SUMO's own driver model (`deltaplan_sumo::SUMO_DRIVER`): the demonstrator of a run
    /// trained in SUMO, the expert of its report.
    SumoDriver,
}

impl SumoEgo {
    /// The name in evaluation files (`sumo_<split>_<name>.json`) and tables.
    pub fn name(self) -> &'static str {
        match self {
            SumoEgo::Policy(p) => p.name(),
            SumoEgo::SumoDriver => "sumo-driver",
        }
    }
}

/// The networks and SUMO settings of an evaluation on `split`: the held-out generated ones, or
/// `maps` (`resco:NAME`, `carla:TOWN`) when given; the hard split doubles the demand made here
/// (RESCO keeps its own).
struct Setting {
    bins: SumoBinaries,
    sumo: SumoConfig,
    maps: Vec<Map>,
    nets: Vec<Arc<NetContext>>,
    /// One episode per seed: `eval.per_family` x 5 (as many as the built-in suite), from the
    /// split's range, alternating between the networks.
    seeds: Vec<u64>,
}

impl Setting {
    fn new(cfg: &Config, out: &Path, split: Split, maps: &[String]) -> Result<Setting> {
        let bins = SumoBinaries::locate_default()?;
        let mut sumo = SumoConfig::default();
        if split == Split::Hard {
            sumo.vehicles_per_hour *= 2;
        }
        let dir = networks_dir(out);
        let maps = maps
            .iter()
            .map(|m| Ok(Map::parse(m)?))
            .collect::<Result<Vec<_>>>()?;
        let nets = if maps.is_empty() {
            generated_networks(&bins, out, &EVAL_NETWORKS, sumo.vehicles_per_hour)?
        } else {
            maps.iter()
                .map(|m| {
                    let files = m.prepare(&bins, &dir, MAP_DEMAND_SEED, sumo.vehicles_per_hour)?;
                    Ok(Arc::new(NetContext::load(files)?))
                })
                .collect::<Result<Vec<_>>>()
                .context("cannot prepare the SUMO evaluation networks")?
        };
        let seeds = (0..cfg.eval.per_family as u64 * 5)
            .map(|k| split.seed_base() + k)
            .collect();
        Ok(Setting {
            bins,
            sumo,
            maps,
            nets,
            seeds,
        })
    }
}

/// Where the evaluation of `ego` on `split` (on `maps`, or the held-out generated networks)
/// is written: OUT/eval/sumo_SPLIT_NAME.json (`..._MAP_MAP.json` for maps), its per-network
/// table beside it (`.md`).
pub fn eval_path(out: &Path, ego: SumoEgo, split: Split, maps: &[String]) -> Result<PathBuf> {
    let maps = maps
        .iter()
        .map(|m| Ok(Map::parse(m)?))
        .collect::<Result<Vec<_>>>()?;
    Ok(path_of(out, ego, split, &maps))
}

fn path_of(out: &Path, ego: SumoEgo, split: Split, maps: &[Map]) -> PathBuf {
    out.join("eval").join(format!(
        "sumo_{}_{}{}.json",
        split.name(),
        ego.name(),
        file_suffix(maps)
    ))
}

/// Evaluates `policy`, driving as `driver`, on `split` in SUMO (see [`Setting`]); writes its
/// evaluation file and table ([`eval_path`]) and prints the table.
pub fn evaluate_policy(
    cfg: &Config,
    out: &Path,
    policy: Policy,
    driver: &mut Driver,
    split: Split,
    maps: &[String],
) -> Result<PathBuf> {
    if driver.bev_observation().is_some() {
        anyhow::bail!(
            "the SUMO world does not draw BEV rasters yet: evaluate this raster planner in \
             the built-in world (without --world sumo)"
        );
    }
    let t = Instant::now();
    let s = Setting::new(cfg, out, split, maps)?;
    let mut env = SumoEnv::new(
        cfg.sim,
        s.sumo.clone(),
        &s.nets,
        &s.bins,
        SumoScenarios::Fixed(s.seeds.clone()),
        s.seeds.len(),
    )?;
    let episodes = deltaplan_eval::drive::drive_to_the_end(&mut env, driver)?;
    write_evaluation(out, SumoEgo::Policy(policy), split, &s, &episodes, t)
}

/// Evaluates SUMO's own driver model on `split`: the same episodes (networks, seeds, starts,
/// routes) as [`evaluate_policy`], SUMO driving the ego; writes and prints as it does.
pub fn evaluate_sumo_driver(
    cfg: &Config,
    out: &Path,
    split: Split,
    maps: &[String],
) -> Result<PathBuf> {
    let t = Instant::now();
    let s = Setting::new(cfg, out, split, maps)?;
    let demonstrator = Demonstrator {
        sim: cfg.sim,
        sumo: s.sumo.clone(),
        nets: &s.nets,
        bins: &s.bins,
    };
    let episodes = demonstrator.drive_fixed(&s.seeds)?;
    write_evaluation(out, SumoEgo::SumoDriver, split, &s, &episodes, t)
}

/// Writes an evaluation's records and per-network table, and prints the table.
fn write_evaluation(
    out: &Path,
    ego: SumoEgo,
    split: Split,
    s: &Setting,
    episodes: &[EpisodeStats],
    started: Instant,
) -> Result<PathBuf> {
    let path = path_of(out, ego, split, &s.maps);
    std::fs::create_dir_all(out.join("eval"))?;
    write_atomic(&path, serde_json::to_string(episodes)?.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    let table = per_network_table(episodes, &s.nets);
    write_atomic(&path.with_extension("md"), table.as_bytes())
        .with_context(|| format!("cannot write {}", path.with_extension("md").display()))?;
    println!(
        "{} on SUMO {} ({} episodes, {:.1} s):\n{table}",
        ego.name(),
        split.name(),
        episodes.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(path)
}

/// The scores per network (world `i` drove on `nets[i % len]`) and over all, as a Markdown
/// table.
fn per_network_table(episodes: &[EpisodeStats], nets: &[Arc<NetContext>]) -> String {
    let mut t = String::from(
        "| network | episodes | driving score | route completion | failures | nuPlan score |\n|---|---:|---:|---:|---:|---:|\n",
    );
    let mut row = |name: &str, eps: &[EpisodeStats]| {
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
