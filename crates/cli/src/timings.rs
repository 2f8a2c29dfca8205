//! Where a run's wall time went. Each stage adds the seconds it worked to `timings.json` in the
//! output directory (so a run interrupted and resumed still adds up), and the refinement's
//! phases come from `metrics.jsonl`; the report shows both, and `run` prints them.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use deltaplan_learn::phases::PhaseSeconds;
use deltaplan_learn::refine::IterationStats;
use deltaplan_stdx::fs::write_atomic;

/// Stages in the order a run executes them (the keys of `timings.json`).
pub const STAGES: [&str; 5] = ["record", "train-sft", "refine", "evaluate", "report"];

fn timings_path(out: &Path) -> PathBuf {
    out.join("timings.json")
}

/// Seconds per stage recorded so far (empty when none; an unreadable file counts as none: it
/// only ever holds timings).
pub fn stage_seconds(out: &Path) -> BTreeMap<String, f64> {
    fs::read_to_string(timings_path(out))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

/// Adds `seconds` of work to `stage`.
pub fn charge(out: &Path, stage: &str, seconds: f64) -> Result<()> {
    let mut all = stage_seconds(out);
    *all.entry(stage.to_string()).or_default() += seconds;
    let path = timings_path(out);
    write_atomic(&path, serde_json::to_string_pretty(&all)?.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The refinement's phases summed over the iterations in `metrics.jsonl`.
pub fn refine_phases(out: &Path) -> PhaseSeconds {
    let mut sum = PhaseSeconds::default();
    for s in fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<IterationStats>(l).ok())
    {
        sum.add(&s.seconds);
    }
    sum
}

/// Rows of the report's timing table: each stage, then the refinement's phases.
pub fn rows(out: &Path) -> Vec<(String, f64)> {
    let stages = stage_seconds(out);
    let mut rows: Vec<(String, f64)> = STAGES
        .iter()
        .filter_map(|&s| stages.get(s).map(|&v| (s.to_string(), v)))
        .collect();
    let p = refine_phases(out);
    if p.total() > 0.0 {
        rows.extend([
            ("refine: environment steps".to_string(), p.env),
            (
                "refine: frozen planner forward".to_string(),
                p.planner_forward,
            ),
            (
                "refine: residual forward (rollout)".to_string(),
                p.policy_forward,
            ),
            ("refine: GAE".to_string(), p.gae),
            ("refine: PPO update".to_string(), p.update),
            ("refine: validation".to_string(), p.validation),
        ]);
    }
    rows
}

/// One line for the terminal: `record 0.7 s | train-sft 31.0 s | ...`.
pub fn summary_line(rows: &[(String, f64)]) -> String {
    rows.iter()
        .map(|(k, v)| format!("{k} {v:.1} s"))
        .collect::<Vec<_>>()
        .join(" | ")
}
