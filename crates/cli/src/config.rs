//! The one TOML configuration of a run, its defaults, and `--set key=value` overrides.
//!
//! Every field that `deltaplan config` prints is a setting with an effect, stored once. Values the
//! program derives are not fields: the demonstrations are recorded in `[sim]`, every stage is
//! seeded by `seed`, and the PPO learning rate anneals over `refine.iterations`; the stages get
//! them from [`Config::recording`] and [`Config::stage_seed`]. The training scenarios
//! (`[train_scenarios]`) are shared by the recording and refinement; evaluation has its own
//! difficulty (`[eval]`).
//!
//! Loading starts from the embedded defaults as a TOML tree, merges the file and then each
//! `--set` into it (a key the defaults do not have is refused, naming the key and, for a
//! derived or moved key, where the real setting is), refuses non-finite numbers, deserialises
//! (a type error names the field) and validates every range, all before any stage runs.

use anyhow::{anyhow, bail, Context, Result};
use deltaplan_eval::report::ConfigDifference;
use deltaplan_learn::dataset::{DemoConfig, Recording};
use deltaplan_learn::refine::RefineConfig;
use deltaplan_learn::scenarios::{TrainScenarios, TrainWorld};
use deltaplan_learn::sft::SftTrainConfig;
use deltaplan_sim::{Difficulty, SimConfig};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Everything `deltaplan run` does, with its defaults. Every field can be set in a TOML file
/// (`--config FILE`) or on the command line (`--set section.field=value`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Seeds every stage (demonstrations, SFT, RL); overridden by `--seed`.
    pub seed: u64,
    /// Write the refinement checkpoint every this many iterations (and always at the end and
    /// on Ctrl-C).
    pub checkpoint_every: usize,
    /// An ONNX planner (with its spec), or another run's `sft.safetensors`, refined and
    /// evaluated in place of this run's built-in SFT planner; `run` then skips record and
    /// train-sft. Unset: the built-in planner this run trains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planner: Option<std::path::PathBuf>,
    /// Simulation shared by every stage.
    pub sim: SimConfig,
    /// Scenario distribution of the training worlds, shared by the recording and refinement.
    pub train_scenarios: TrainScenarios,
    pub demos: DemoConfig,
    pub sft: SftTrainConfig,
    pub refine: RefineConfig,
    pub eval: EvalConfig,
}

/// Closed-loop evaluation settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalConfig {
    /// Scenarios per family and split (the suites are fixed lists of seeds never used in
    /// training; every family is evaluated).
    pub per_family: usize,
    /// Difficulty of the `eval` split; the `hard` split is `difficulty.harder()`. Apart from
    /// `train_scenarios.difficulty` on purpose: the evaluation is fixed while training varies.
    pub difficulty: Difficulty,
    /// Number of example episodes (SFT fails, RL does not) to render into the report.
    pub examples: usize,
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            per_family: 200,
            difficulty: Difficulty::default(),
            examples: 3,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            seed: 1,
            checkpoint_every: 10,
            planner: None,
            sim: SimConfig::default(),
            train_scenarios: TrainScenarios::default(),
            demos: DemoConfig::default(),
            sft: SftTrainConfig::default(),
            refine: RefineConfig::default(),
            eval: EvalConfig::default(),
        }
    }
}

/// Keys that are not settings (derived by the program, or moved), with where the real setting
/// is. A key matches itself and everything below it.
pub const NOT_SETTINGS: &[(&str, &str)] = &[
    (
        "demos.sim",
        "the demonstrations are recorded in the run's simulator: set `sim.<field>` instead",
    ),
    (
        "demos.seed",
        "demos.seed is derived from `seed`: set `seed` (or --seed) instead",
    ),
    (
        "sft.seed",
        "sft.seed is derived from `seed`: set `seed` (or --seed) instead",
    ),
    (
        "refine.ppo.num_iterations",
        "the learning rate anneals over `refine.iterations`: set that instead",
    ),
    ("demos.families", MOVED_TO_TRAIN_SCENARIOS),
    ("demos.difficulty", MOVED_TO_TRAIN_SCENARIOS),
    ("demos.difficulty_mix", MOVED_TO_TRAIN_SCENARIOS),
    ("refine.families", MOVED_TO_TRAIN_SCENARIOS),
    ("refine.difficulty", MOVED_TO_TRAIN_SCENARIOS),
    ("refine.difficulty_mix", MOVED_TO_TRAIN_SCENARIOS),
];

const MOVED_TO_TRAIN_SCENARIOS: &str =
    "the training scenarios are set once for demos and refine: set `train_scenarios.<field>` instead";

/// Settings that are unset by default (so `deltaplan config` cannot print them as values):
/// key, an example value, what setting it does.
pub const OPTIONAL_SETTINGS: &[(&str, &str, &str)] = &[
    (
        "planner",
        "\"my_planner.onnx\"",
        "refine this ONNX planner (or another run's sft.safetensors) instead of training one (also --planner)",
    ),
    (
        "refine.ppo.kl_sft_target",
        "0.02",
        "target KL to the SFT policy; needed by kl_sft_adaptive",
    ),
    (
        "sft.max_train_samples",
        "20000",
        "train on at most this many samples (a deliberately weaker planner)",
    ),
    (
        "demos.bev",
        "{}",
        "record BEV rasters beside the observations; fields height, width, metres_per_pixel, \
         behind_m (e.g. {height = 96, width = 96}), the rest default to 64 x 64 at 0.75 m/px",
    ),
];

impl Config {
    /// Loads `path` (or nothing) over the embedded defaults, applies `--set` overrides and
    /// `--seed`, and validates everything.
    pub fn load(path: Option<&Path>, sets: &[String], seed: Option<u64>) -> Result<Config> {
        let mut tree = defaults_tree()?;
        if let Some(p) = path {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read config file {}", p.display()))?;
            let file: toml::Table = toml::from_str(&text)
                .with_context(|| format!("config file {} is not valid TOML", p.display()))?;
            merge(&mut tree, file, "")
                .with_context(|| format!("in config file {}", p.display()))?;
        }
        for s in sets {
            apply_set(&mut tree, s)?;
        }
        let checked = finish(&tree, seed);
        match path {
            Some(p) => {
                checked.with_context(|| format!("in the configuration from {}", p.display()))
            }
            None => checked,
        }
    }

    /// The embedded defaults with `overrides` merged in (a table shaped like the TOML file:
    /// sections of fields), checked exactly as [`Config::load`] checks a file: what the Python
    /// package passes, so it has no configuration of its own.
    pub fn from_overrides(overrides: toml::Table) -> Result<Config> {
        let mut tree = defaults_tree()?;
        merge(&mut tree, overrides, "")?;
        finish(&tree, None)
    }

    /// Checks every range, naming the field at fault.
    pub fn validate(&self) -> Result<()> {
        self.sim.validate().map_err(|e| anyhow!("sim: {e}"))?;
        check_sim_ranges(&self.sim)?;
        self.train_scenarios.validate()?;
        self.demos.validate()?;
        self.sft.validate()?;
        self.refine.validate()?;
        self.eval
            .difficulty
            .validate()
            .map_err(|e| anyhow!("eval.difficulty: {e}"))?;
        if self.eval.per_family == 0 {
            bail!("eval.per_family must be at least 1");
        }
        if self.checkpoint_every == 0 {
            bail!("checkpoint_every must be at least 1");
        }
        if self.train_scenarios.world == TrainWorld::Sumo {
            // What a run in SUMO cannot do, refused before any stage writes a file.
            self.recording().validate()?;
            if self.refine.select_every > 0 {
                bail!(
                    "refine.select_every validates in the built-in world, not in SUMO: set \
                     refine.select_every = 0 with train_scenarios.world = \"sumo\""
                );
            }
        }
        Ok(())
    }

    /// What the recording stage is given: `[demos]` with the run's simulator, seed and training
    /// scenarios.
    pub fn recording(&self) -> Recording {
        Recording {
            sim: self.sim,
            seed: self.seed,
            scenarios: self.train_scenarios.clone(),
            demos: self.demos.clone(),
        }
    }

    /// Seed of SFT training (initialisation, split, shuffles) and of refinement: the run's seed.
    pub fn stage_seed(&self) -> u64 {
        self.seed
    }

    /// The configuration as TOML (what runs record in `run.toml`).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }

    /// The settings whose values differ from the embedded defaults (an optional setting that is
    /// set counts, with default `(unset)`), in key order, values as TOML.
    pub fn differences_from_defaults(&self) -> Result<Vec<ConfigDifference>> {
        let ours = toml::Table::try_from(self)
            .map_err(|e| anyhow!("the configuration does not serialise: {e}"))?;
        let mut out = Vec::new();
        leaf_differences(&defaults_tree()?, &ours, "", &mut out);
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// [`Config::to_toml`] followed by comments on the values that are not settings and the
    /// settings that are unset by default (what `deltaplan config` prints).
    pub fn to_annotated_toml(&self) -> String {
        let mut text = self.to_toml();
        text.push_str("\n# Not settings (the program derives them):\n");
        text.push_str("#   the demonstrations are recorded in [sim]; demos, sft and refine are seeded by `seed`;\n");
        text.push_str("#   the PPO learning rate anneals over refine.iterations.\n");
        text.push_str("# Unset by default (set them to use them):\n");
        for (key, example, what) in OPTIONAL_SETTINGS {
            text.push_str(&format!("#   {key} = {example}    # {what}\n"));
        }
        text
    }
}

/// The merged tree as a validated [`Config`], with `seed` (from `--seed`) over its seed.
fn finish(tree: &toml::Table, seed: Option<u64>) -> Result<Config> {
    check_finite(&toml::Value::Table(tree.clone()), "")?;
    let mut cfg = deserialize(tree)?;
    if let Some(seed) = seed {
        cfg.seed = seed;
    }
    cfg.validate()?;
    Ok(cfg)
}

/// The embedded defaults as a TOML table.
fn defaults_tree() -> Result<toml::Table> {
    toml::Table::try_from(Config::default())
        .map_err(|e| anyhow!("the default configuration does not serialise: {e}"))
}

/// Appends to `out` every leaf of `ours` that is missing from or different in `defaults`
/// (tables are walked; arrays are leaves).
fn leaf_differences(
    defaults: &toml::Table,
    ours: &toml::Table,
    prefix: &str,
    out: &mut Vec<ConfigDifference>,
) {
    for (key, value) in ours {
        let full = join(prefix, key);
        match (defaults.get(key), value) {
            (Some(toml::Value::Table(d)), toml::Value::Table(o)) => {
                leaf_differences(d, o, &full, out)
            }
            (Some(d), v) if d == v => {}
            (d, v) => out.push(ConfigDifference {
                key: full,
                default: d.map_or_else(|| "(unset)".to_string(), shortest),
                value: shortest(v),
            }),
        }
    }
}

/// `v` as TOML, with single-precision settings printed as typed (`0.02`, not the f64
/// expansion of the f32 `0.019999999552965164`).
fn shortest(v: &toml::Value) -> String {
    match v {
        toml::Value::Float(x) if f64::from(*x as f32) == *x => {
            let s = (*x as f32).to_string();
            if s.contains(['.', 'e', 'N', 'i']) {
                s
            } else {
                format!("{s}.0")
            }
        }
        toml::Value::Array(items) => {
            format!(
                "[{}]",
                items.iter().map(shortest).collect::<Vec<_>>().join(", ")
            )
        }
        v => v.to_string(),
    }
}

/// The hint for `key` if it is not a setting.
fn not_a_setting(key: &str) -> Option<&'static str> {
    NOT_SETTINGS
        .iter()
        .find(|(k, _)| key == *k || key.starts_with(&format!("{k}.")))
        .map(|(_, hint)| *hint)
}

fn is_optional(key: &str) -> bool {
    OPTIONAL_SETTINGS.iter().any(|(k, _, _)| *k == key)
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// Merges `over` into `tree` (the defaults, or defaults with earlier overrides), refusing keys
/// the defaults do not have and values of another type.
fn merge(tree: &mut toml::Table, over: toml::Table, prefix: &str) -> Result<()> {
    for (key, value) in over {
        set_leaf(tree, &key, value, prefix)?;
    }
    Ok(())
}

/// Sets `tree[key] = value` (merging tables), where `prefix` is the path of `tree`.
fn set_leaf(tree: &mut toml::Table, key: &str, value: toml::Value, prefix: &str) -> Result<()> {
    let full = join(prefix, key);
    if let Some(hint) = not_a_setting(&full) {
        bail!("`{full}` is not a setting: {hint}");
    }
    match (tree.get_mut(key), value) {
        (Some(toml::Value::Table(sub)), toml::Value::Table(over)) => merge(sub, over, &full),
        (Some(toml::Value::Table(_)), v) => {
            bail!("`{full}` is a section, not a value: set its fields, e.g. `{full}.<field>={v}`")
        }
        (Some(old), v) => {
            *old = same_type(&full, old, v)?;
            Ok(())
        }
        (None, v) if is_optional(&full) => {
            tree.insert(key.to_string(), v);
            Ok(())
        }
        (None, _) => Err(unknown_key(tree, key, &full)),
    }
}

/// An unknown key, with the fields its section does have.
fn unknown_key(section: &toml::Table, key: &str, full: &str) -> anyhow::Error {
    let mut known: Vec<&str> = section.keys().map(String::as_str).collect();
    let parent = full.strip_suffix(key).unwrap_or("").trim_end_matches('.');
    known.extend(
        OPTIONAL_SETTINGS
            .iter()
            .filter_map(|(k, _, _)| k.strip_prefix(parent)?.strip_prefix('.'))
            .filter(|rest| !rest.contains('.')),
    );
    known.sort_unstable();
    let place = if parent.is_empty() {
        "the top level".to_string()
    } else {
        format!("[{parent}]")
    };
    anyhow!(
        "unknown configuration key `{full}`: {place} has {}",
        known
            .iter()
            .map(|k| format!("`{k}`"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// `new` checked against the type of the value it replaces (integers become floats where a
/// float is expected); the error names the field.
fn same_type(key: &str, old: &toml::Value, new: toml::Value) -> Result<toml::Value> {
    use toml::Value as V;
    Ok(match (old, new) {
        (V::Float(_), V::Integer(i)) => V::Float(i as f64),
        (V::Array(old_items), V::Array(items)) => match old_items.first() {
            Some(first) => V::Array(
                items
                    .into_iter()
                    .map(|item| same_type(key, first, item))
                    .collect::<Result<_>>()?,
            ),
            None => V::Array(items),
        },
        (old, new) if std::mem::discriminant(old) == std::mem::discriminant(&new) => new,
        (old, new) => bail!(
            "`{key}` expects {} (like the default {old}), got {} `{new}`",
            kind(old),
            kind(&new)
        ),
    })
}

fn kind(v: &toml::Value) -> &'static str {
    match v {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a number",
        toml::Value::Boolean(_) => "true or false",
        toml::Value::Datetime(_) => "a date",
        toml::Value::Array(_) => "an array",
        toml::Value::Table(_) => "a section",
    }
}

/// Applies one `a.b.c=value` override; `value` is parsed as TOML (numbers, booleans, arrays,
/// quoted strings) and taken as a bare string otherwise.
fn apply_set(tree: &mut toml::Table, set: &str) -> Result<()> {
    let (key, raw) = set
        .split_once('=')
        .ok_or_else(|| anyhow!("--set expects key=value, got `{set}`"))?;
    let key = key.trim();
    let raw = raw.trim();
    let parsed: toml::Value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let parts: Vec<&str> = key.split('.').collect();
    let (leaf, sections) = parts
        .split_last()
        .ok_or_else(|| anyhow!("--set {set}: empty key"))?;
    let mut cur = tree;
    for (i, part) in sections.iter().enumerate() {
        let path = parts[..=i].join(".");
        if let Some(hint) = not_a_setting(&path) {
            bail!("--set {set}: `{path}` is not a setting: {hint}");
        }
        if !cur.contains_key(*part) {
            return Err(unknown_key(cur, part, &path)).with_context(|| format!("--set {set}"));
        }
        cur = cur
            .get_mut(*part)
            .and_then(toml::Value::as_table_mut)
            .ok_or_else(|| anyhow!("--set {set}: `{path}` is a value, not a section"))?;
    }
    set_leaf(cur, leaf, parsed, &parts[..parts.len() - 1].join("."))
        .with_context(|| format!("--set {set}"))
}

/// Refuses `inf` and `nan` anywhere, naming the field.
fn check_finite(value: &toml::Value, path: &str) -> Result<()> {
    match value {
        toml::Value::Float(x) if !x.is_finite() => {
            bail!("`{path}` = {x} is not a finite number")
        }
        toml::Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, v)| check_finite(v, &format!("{path}[{i}]"))),
        toml::Value::Table(t) => t
            .iter()
            .try_for_each(|(k, v)| check_finite(v, &join(path, k))),
        _ => Ok(()),
    }
}

/// The merged tree as a [`Config`]. Deserialises from text so that an error has a position,
/// which names the field (`section.key`).
fn deserialize(tree: &toml::Table) -> Result<Config> {
    let text = toml::to_string(tree).context("the configuration does not serialise")?;
    toml::from_str::<Config>(&text).map_err(|e| {
        let field = e
            .span()
            .map(|span| key_at(&text, span.start))
            .unwrap_or_default();
        anyhow!("invalid configuration: `{field}`: {}", e.message().trim())
    })
}

/// The dotted key on the line of byte `pos` of a TOML document (its last `[section]` header
/// plus the key before `=`).
fn key_at(text: &str, pos: usize) -> String {
    let before = &text[..pos.min(text.len())];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("");
    let section = before[..line_start]
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix('[')?.strip_suffix(']'))
        .unwrap_or("");
    match line.split_once('=') {
        Some((key, _)) => join(section, key.trim()),
        None => line.trim().trim_matches(['[', ']']).to_string(),
    }
}

/// Ranges of the simulator fields that `SimConfig::validate` does not check: a vehicle, a
/// controller and an expert that can drive at all.
fn check_sim_ranges(sim: &SimConfig) -> Result<()> {
    let (v, c, e, r) = (&sim.vehicle, &sim.controller, &sim.expert, &sim.reward);
    let checks: [(&str, f32, f32, f32); 24] = [
        ("sim.vehicle.length", v.length, 1.0, 20.0),
        ("sim.vehicle.width", v.width, 0.5, 5.0),
        ("sim.vehicle.wheelbase", v.wheelbase, 0.5, 10.0),
        ("sim.vehicle.rear_to_center", v.rear_to_center, 0.0, 10.0),
        ("sim.vehicle.max_steer", v.max_steer, 0.01, 1.5),
        ("sim.vehicle.max_steer_rate", v.max_steer_rate, 0.01, 20.0),
        ("sim.vehicle.max_accel", v.max_accel, 0.1, 20.0),
        ("sim.vehicle.max_brake", v.max_brake, 0.1, 30.0),
        (
            "sim.controller.lookahead_base",
            c.lookahead_base,
            0.0,
            100.0,
        ),
        ("sim.controller.lookahead_gain", c.lookahead_gain, 0.0, 10.0),
        ("sim.controller.lookahead_min", c.lookahead_min, 0.1, 100.0),
        ("sim.controller.lookahead_max", c.lookahead_max, 0.1, 200.0),
        ("sim.expert.lateral_accel", e.lateral_accel, 0.1, 20.0),
        ("sim.expert.comfort_brake", e.comfort_brake, 0.1, 20.0),
        ("sim.expert.headway", e.headway, 0.0, 10.0),
        ("sim.expert.min_gap", e.min_gap, 0.0, 50.0),
        ("sim.expert.max_accel", e.max_accel, 0.1, 20.0),
        ("sim.expert.idm_brake", e.idm_brake, 0.1, 20.0),
        ("sim.expert.yellow_brake", e.yellow_brake, 0.1, 30.0),
        ("sim.expert.lateral_tau", e.lateral_tau, 0.01, 60.0),
        (
            "sim.reward.speeding_tolerance",
            r.speeding_tolerance,
            0.0,
            10.0,
        ),
        (
            "sim.reward.outside_lane_factor",
            r.outside_lane_factor,
            0.0,
            1.0,
        ),
        ("sim.reward.ttc_threshold", r.ttc_threshold, 0.0, 20.0),
        ("sim.reward.comfort_penalty", r.comfort_penalty, 0.0, 1000.0),
    ];
    for (field, value, min, max) in checks {
        if !(min..=max).contains(&value) {
            bail!("`{field}` = {value} is out of range: allowed {min} to {max}");
        }
    }
    if !(0.0..=1.0).contains(&r.ttc_factor) {
        bail!(
            "`sim.reward.ttc_factor` = {} is out of range: allowed 0 to 1",
            r.ttc_factor
        );
    }
    if c.lookahead_min > c.lookahead_max {
        bail!(
            "`sim.controller.lookahead_min` = {} must not exceed `sim.controller.lookahead_max` = {}",
            c.lookahead_min,
            c.lookahead_max
        );
    }
    if c.fit_waypoints == 0 || c.fit_waypoints > sim.horizon {
        bail!(
            "`sim.controller.fit_waypoints` = {} is out of range: allowed 1 to sim.horizon = {}",
            c.fit_waypoints,
            sim.horizon
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests;
