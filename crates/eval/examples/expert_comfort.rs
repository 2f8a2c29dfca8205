//! Expert-only closed-loop evaluation: driving score, failures and nuPlan comfort per split
//! and family, and which comfort bounds fail how often. Cheap (seconds, no training), so the
//! expert's driving style can be measured before and after a change.
//!
//! `cargo run --release -p deltaplan-eval --example expert_comfort [PER_FAMILY]`
//!
//! Splits: `eval` and `hard` (the report's suites) and `fresh` / `fresh-hard`: scenarios from
//! a seed range no evaluation suite and no default training run draws (the train split's
//! seeds from 2^39 on), at the default and the hard difficulty, so a change is not tuned to
//! the suites.

use deltaplan_eval::{closed_loop, Driver};
use deltaplan_sim::metrics::nuplan_comfort::NAMES;
use deltaplan_sim::{Difficulty, EpisodeStats, Family, ScenarioSpec, SimConfig, Split};

/// First seed of the never-used range: far into the train split, beyond any training run.
const FRESH_SEED_BASE: u64 = 1 << 39;

fn fresh_suite(per_family: usize, difficulty: Difficulty) -> Vec<ScenarioSpec> {
    Family::ALL
        .iter()
        .enumerate()
        .flat_map(|(fi, &family)| {
            (0..per_family).map(move |k| ScenarioSpec {
                family,
                seed: FRESH_SEED_BASE + (fi * 1_000_003 + k) as u64,
                difficulty,
            })
        })
        .collect()
}

fn row(label: &str, eps: &[&EpisodeStats]) {
    let n = eps.len() as f64;
    let mean = |f: &dyn Fn(&EpisodeStats) -> f64| eps.iter().map(|e| f(e)).sum::<f64>() / n;
    let ds = mean(&|e| f64::from(e.driving_score()));
    let fail = mean(&|e| f64::from(u8::from(e.is_failure())));
    let pass = mean(&|e| f64::from(u8::from(e.comfort_pass())));
    let steps: u64 = eps.iter().map(|e| u64::from(e.steps)).sum();
    let mut episodes_per_bound = [0u32; 6];
    let mut steps_per_bound = [0u64; 6];
    for e in eps {
        for (k, &c) in e.comfort_steps.iter().enumerate() {
            episodes_per_bound[k] += u32::from(c > 0);
            steps_per_bound[k] += u64::from(c);
        }
    }
    let bounds: Vec<String> = NAMES
        .iter()
        .enumerate()
        .map(|(k, name)| {
            format!(
                "{name} {:.1}%/{:.2}%",
                100.0 * f64::from(episodes_per_bound[k]) / n,
                100.0 * steps_per_bound[k] as f64 / steps.max(1) as f64
            )
        })
        .collect();
    let mut ends: std::collections::BTreeMap<String, u32> = Default::default();
    for e in eps {
        *ends.entry(format!("{:?}", e.end)).or_default() += 1;
    }
    let red = mean(&|e| f64::from(u8::from(e.red_lights > 0)));
    let nuplan = mean(&|e| f64::from(e.nuplan_score()));
    // Comfort failed, but the scene forced a brake beyond the bound.
    let forced = mean(&|e| f64::from(u8::from(!e.comfort_pass() && e.forced_brake_steps > 0)));
    println!(
        "{label:<16} n={:<4} DS {ds:6.2} nuPlan {nuplan:6.2} fail {:5.1}% red {:4.1}% comfort {:5.1}% (failed, forced {:4.1}%) | violating (episodes/steps): {} | ends {ends:?}",
        eps.len(),
        100.0 * fail,
        100.0 * red,
        100.0 * pass,
        100.0 * forced,
        bounds.join(", ")
    );
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let per_family: usize = match std::env::args().nth(1) {
        Some(n) => n.parse()?,
        None => 40,
    };
    let d = Difficulty::default();
    let splits = [
        ("eval", Split::Eval.suite(&Family::ALL, per_family, d)),
        ("hard", Split::Hard.suite(&Family::ALL, per_family, d)),
        ("fresh", fresh_suite(per_family, d)),
        ("fresh-hard", fresh_suite(per_family, d.harder())),
    ];
    for (name, specs) in splits {
        let stats = closed_loop(SimConfig::default(), &specs, &mut Driver::Expert)?;
        let all: Vec<&EpisodeStats> = stats.iter().collect();
        row(name, &all);
        for family in Family::ALL {
            let of: Vec<&EpisodeStats> = stats.iter().filter(|e| e.family == family).collect();
            row(&format!("  {}", family.name()), &of);
            if std::env::var("DETAIL").is_ok_and(|f| f == family.name()) {
                // Scenario indices (seed offsets within the family) that fail comfort.
                let rough: Vec<String> = of
                    .iter()
                    .enumerate()
                    .filter(|(_, e)| !e.comfort_pass() || e.is_failure())
                    .map(|(k, e)| format!("{k}:{:?}:{:?}", e.end, e.comfort_steps))
                    .collect();
                println!("    {}", rough.join(" "));
            }
        }
    }
    Ok(())
}
