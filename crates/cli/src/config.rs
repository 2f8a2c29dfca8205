//! The one TOML configuration of a run, its defaults, and `--set key=value` overrides.

use anyhow::{anyhow, bail, Context, Result};
use deltaplan_learn::dataset::DemoConfig;
use deltaplan_learn::refine::RefineConfig;
use deltaplan_learn::sft::SftTrainConfig;
use deltaplan_sim::{Difficulty, SimConfig};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Closed-loop evaluation settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalConfig {
    /// Scenarios per family and split (the suites are fixed lists of seeds never used in
    /// training).
    pub per_family: usize,
    /// Difficulty of the `eval` split; the `hard` split makes it harder.
    pub difficulty: Difficulty,
    /// Number of example episodes (SFT fails, RL does not) to render into the report.
    pub examples: usize,
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            per_family: 40,
            difficulty: Difficulty::default(),
            examples: 3,
        }
    }
}

/// Everything `deltaplan run` does, with its defaults. Every field can be set in a TOML file
/// (`--config FILE`) or on the command line (`--set section.field=value`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Seeds every stage (demonstrations, SFT, RL); overridden by `--seed`.
    pub seed: u64,
    /// Simulation shared by every stage.
    pub sim: SimConfig,
    pub demos: DemoConfig,
    pub sft: SftTrainConfig,
    pub refine: RefineConfig,
    /// Write the refinement checkpoint every this many iterations (and always at the end and
    /// on Ctrl-C).
    pub checkpoint_every: usize,
    pub eval: EvalConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            seed: 1,
            sim: SimConfig::default(),
            demos: DemoConfig::default(),
            sft: SftTrainConfig::default(),
            refine: RefineConfig::default(),
            checkpoint_every: 10,
            eval: EvalConfig::default(),
        }
    }
}

impl Config {
    /// Loads `path` (or the defaults), applies `--set` overrides and `--seed`, validates.
    pub fn load(path: Option<&Path>, sets: &[String], seed: Option<u64>) -> Result<Config> {
        let mut value: toml::Value = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read config file {}", p.display()))?;
                toml::from_str(&text)
                    .with_context(|| format!("config file {} is not valid TOML", p.display()))?
            }
            None => toml::Value::Table(Default::default()),
        };
        for s in sets {
            apply_set(&mut value, s)?;
        }
        let mut cfg: Config = value
            .try_into()
            .map_err(|e: toml::de::Error| anyhow!("invalid configuration: {}", e.message()))
            .context("fix the field named above in the config file or the --set option")?;
        if let Some(seed) = seed {
            cfg.seed = seed;
        }
        cfg.propagate();
        cfg.validate()?;
        Ok(cfg)
    }

    /// The shared settings flow into each stage: one simulator, one seed.
    fn propagate(&mut self) {
        self.demos.sim = self.sim;
        self.demos.seed = self.seed;
        self.sft.seed = self.seed;
    }

    pub fn validate(&self) -> Result<()> {
        self.sim.validate().context("in section [sim]")?;
        self.demos.validate().context("in section [demos]")?;
        self.sft.validate().context("in section [sft]")?;
        self.refine.validate().context("in section [refine]")?;
        self.eval
            .difficulty
            .validate()
            .context("in section [eval.difficulty]")?;
        if self.eval.per_family == 0 {
            bail!("eval.per_family must be at least 1");
        }
        Ok(())
    }

    /// The configuration as TOML (what `deltaplan config` prints and runs record).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }
}

/// Applies one `a.b.c=value` override; `value` is parsed as TOML (numbers, booleans, arrays,
/// quoted strings) and taken as a bare string otherwise.
fn apply_set(root: &mut toml::Value, set: &str) -> Result<()> {
    let (key, raw) = set
        .split_once('=')
        .ok_or_else(|| anyhow!("--set expects key=value, got `{set}`"))?;
    let parsed: toml::Value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let parts: Vec<&str> = key.trim().split('.').collect();
    let mut cur = root;
    for (i, part) in parts.iter().enumerate() {
        let table = cur
            .as_table_mut()
            .ok_or_else(|| anyhow!("--set {key}: `{}` is not a section", parts[..i].join(".")))?;
        if i + 1 == parts.len() {
            table.insert(part.to_string(), parsed.clone());
            return Ok(());
        }
        cur = table
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(Default::default()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_overrides_nested_fields_and_unknown_fields_are_named() {
        let cfg = Config::load(
            None,
            &[
                "refine.iterations=7".into(),
                "sim.horizon=8".into(),
                "eval.per_family=3".into(),
            ],
            Some(9),
        )
        .unwrap();
        assert_eq!(cfg.refine.iterations, 7);
        assert_eq!(cfg.sim.horizon, 8);
        assert_eq!(
            cfg.demos.sim.horizon, 8,
            "sim settings flow into the recording"
        );
        assert_eq!(cfg.seed, 9);
        let err = Config::load(None, &["refine.iteratons=7".into()], None).unwrap_err();
        assert!(format!("{err:#}").contains("iteratons"), "{err:#}");
        let err = Config::load(None, &["demos.difficulty.curvature=3.0".into()], None).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("curvature") && msg.contains("0 to 1"), "{msg}");
    }

    #[test]
    fn defaults_round_trip_through_toml() {
        let cfg = Config::default();
        let text = cfg.to_toml();
        let back: Config = toml::from_str(&text).unwrap();
        assert_eq!(back, cfg);
    }
}
