//! The SFT-vs-RL report: `report.json` (machine-readable), `report.md` (tables with embedded
//! figures) and SVG figures.
//!
//! `report.json` holds `splits.<split>.<policy>.<metric>` as plain numbers (driving score and
//! route completion 0-100, rates as fractions), with intervals under
//! `splits.<split>.<policy>.ci.<metric> = [lo, hi]`, per-family numbers under
//! `splits.<split>.<policy>.families.<family>.<metric>`, and paired differences under
//! `splits.<split>.paired.<a>_minus_<b>.<metric> = {mean, lo, hi}`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use deltaplan_sim::EpisodeStats;
use serde_json::{json, Map, Value};

use crate::plot::{grouped_bars, line_chart, Bar, Series};
use crate::{paired_difference, summarize, EvalError, Result, Summary, METRICS};

/// One policy's closed-loop episodes on one split, with its open-loop errors.
pub struct PolicyRun {
    pub name: String,
    pub episodes: Vec<EpisodeStats>,
    /// Open-loop ADE/FDE against the expert on held-out demonstrations, metres.
    pub ade: f64,
    pub fde: f64,
}

/// All policies on one split (same scenarios, same order).
pub struct SplitRun {
    pub name: String,
    pub policies: Vec<PolicyRun>,
}

/// A point of the learning curve.
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
pub struct CurvePoint {
    pub env_steps: f64,
    pub driving_score: f64,
    pub episode_return: f64,
    pub failure_rate: f64,
}

/// An episode rendered for two policies (paths relative to the report directory).
pub struct Example {
    pub title: String,
    pub images: Vec<(String, String)>,
}

/// Everything the report shows.
pub struct ReportInput {
    pub splits: Vec<SplitRun>,
    pub curve: Vec<CurvePoint>,
    pub wall_seconds: f64,
    pub env_steps: u64,
    pub examples: Vec<Example>,
    /// Free-form lines for the header (configuration, seeds).
    pub notes: Vec<String>,
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| EvalError::Io {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

fn metrics_json(s: &Summary) -> Map<String, Value> {
    let mut m = Map::new();
    for (k, e) in &s.metrics {
        m.insert(k.clone(), json!(e.mean));
    }
    m
}

/// Builds `report.json`'s value.
pub fn report_json(input: &ReportInput) -> Result<Value> {
    let mut splits = Map::new();
    for split in &input.splits {
        let mut sp = Map::new();
        for p in &split.policies {
            let (overall, families) = summarize(&p.episodes);
            let mut m = metrics_json(&overall);
            m.insert("ade".into(), json!(p.ade));
            m.insert("fde".into(), json!(p.fde));
            m.insert("episodes".into(), json!(overall.episodes));
            let ci: Map<String, Value> = overall
                .metrics
                .iter()
                .map(|(k, e)| (k.clone(), json!([e.lo, e.hi])))
                .collect();
            m.insert("ci".into(), Value::Object(ci));
            let fam: Map<String, Value> = families
                .iter()
                .map(|(f, s)| (f.clone(), Value::Object(metrics_json(s))))
                .collect();
            m.insert("families".into(), Value::Object(fam));
            sp.insert(p.name.clone(), Value::Object(m));
        }
        let mut paired = Map::new();
        for (a, b) in [("sft", "rl"), ("expert", "rl"), ("expert", "sft")] {
            let (Some(pa), Some(pb)) = (
                split.policies.iter().find(|p| p.name == a),
                split.policies.iter().find(|p| p.name == b),
            ) else {
                continue;
            };
            let mut d = Map::new();
            for m in METRICS.iter().chain(&["failure_rate"]) {
                let e = paired_difference(&pa.episodes, &pb.episodes, m)?;
                d.insert(
                    m.to_string(),
                    json!({"mean": e.mean, "lo": e.lo, "hi": e.hi}),
                );
            }
            paired.insert(format!("{b}_minus_{a}"), Value::Object(d));
        }
        sp.insert("paired".into(), Value::Object(paired));
        splits.insert(split.name.clone(), Value::Object(sp));
    }
    Ok(json!({
        "splits": splits,
        "wall_seconds": input.wall_seconds,
        "env_steps": input.env_steps,
        "learning_curve": input.curve,
        "notes": input.notes,
    }))
}

/// Writes `report.json`, `report.md` and the figures into `dir` (created if needed).
pub fn write_report(dir: &Path, input: &ReportInput) -> Result<Value> {
    let figs = dir.join("figures");
    std::fs::create_dir_all(&figs).map_err(|e| EvalError::Io {
        path: figs.display().to_string(),
        reason: e.to_string(),
    })?;
    let value = report_json(input)?;
    write(
        &dir.join("report.json"),
        &serde_json::to_string_pretty(&value).unwrap_or_default(),
    )?;

    // Figures.
    let curve = line_chart(
        "Closed-loop driving score of training episodes",
        "environment steps",
        "driving score",
        &[Series {
            name: "RL (training episodes)",
            points: input
                .curve
                .iter()
                .map(|p| (p.env_steps, p.driving_score))
                .collect(),
        }],
    );
    write(&figs.join("learning_curve.svg"), &curve)?;
    let returns = line_chart(
        "Episode return and failure rate during refinement",
        "environment steps",
        "return / failure %",
        &[
            Series {
                name: "episode return",
                points: input
                    .curve
                    .iter()
                    .map(|p| (p.env_steps, p.episode_return))
                    .collect(),
            },
            Series {
                name: "collision or off-road, % of episodes",
                points: input
                    .curve
                    .iter()
                    .map(|p| (p.env_steps, 100.0 * p.failure_rate))
                    .collect(),
            },
        ],
    );
    write(&figs.join("learning_returns.svg"), &returns)?;
    for split in &input.splits {
        let names: Vec<&str> = split.policies.iter().map(|p| p.name.as_str()).collect();
        let per: Vec<BTreeMap<String, Summary>> = split
            .policies
            .iter()
            .map(|p| summarize(&p.episodes).1)
            .collect();
        let groups: Vec<(String, Vec<Bar>)> = per[0]
            .keys()
            .map(|f| {
                let bars = per
                    .iter()
                    .map(|fams| {
                        let e = fams
                            .get(f)
                            .and_then(|s| s.metrics.get("driving_score"))
                            .copied()
                            .unwrap_or_default();
                        Bar {
                            value: e.mean,
                            lo: e.lo,
                            hi: e.hi,
                        }
                    })
                    .collect();
                (f.clone(), bars)
            })
            .collect();
        let svg = grouped_bars(
            &format!("Driving score per family ({} split, 95% CI)", split.name),
            "driving score",
            &names,
            &groups,
            100.0,
        );
        write(&figs.join(format!("families_{}.svg", split.name)), &svg)?;
    }

    write(&dir.join("report.md"), &markdown(input, &value))?;
    Ok(value)
}

fn markdown(input: &ReportInput, v: &Value) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# deltaplan: SFT planner vs RL-refined planner, closed loop\n"
    );
    for n in &input.notes {
        let _ = writeln!(s, "- {n}");
    }
    let _ = writeln!(
        s,
        "- wall time {:.0} s, {} environment steps of RL refinement\n",
        input.wall_seconds, input.env_steps
    );
    let labels = [
        ("driving_score", "Driving score (0-100)"),
        ("route_completion", "Route completion (%)"),
        ("infraction_penalty", "Infraction penalty"),
        ("collision_rate", "Episodes with a collision"),
        ("offroad_rate", "Episodes off-road"),
        ("red_light_rate", "Episodes running a red light"),
        ("failure_rate", "Episodes with collision or off-road"),
        ("comfort_pass_rate", "Comfort pass rate (nuPlan)"),
        ("mean_speed", "Mean speed (m/s)"),
        ("ade", "Open-loop ADE (m)"),
        ("fde", "Open-loop FDE (m)"),
    ];
    for split in &input.splits {
        let sv = &v["splits"][&split.name];
        let _ = writeln!(
            s,
            "## Split `{}` ({} scenarios)\n",
            split.name,
            split.policies.first().map_or(0, |p| p.episodes.len())
        );
        let names: Vec<&str> = split.policies.iter().map(|p| p.name.as_str()).collect();
        let _ = writeln!(
            s,
            "| metric | {} | RL - SFT (paired, 95% CI) |",
            names.join(" | ")
        );
        let _ = writeln!(s, "|---|{}---|", "---:|".repeat(names.len()));
        for (key, label) in labels {
            let _ = write!(s, "| {label} |");
            for n in &names {
                let mean = sv[*n][key].as_f64().unwrap_or(f64::NAN);
                match sv[*n]["ci"][key].as_array() {
                    Some(ci) => {
                        let _ = write!(
                            s,
                            " {} [{}, {}] |",
                            num(mean),
                            num(ci[0].as_f64().unwrap_or(f64::NAN)),
                            num(ci[1].as_f64().unwrap_or(f64::NAN))
                        );
                    }
                    None => {
                        let _ = write!(s, " {} |", num(mean));
                    }
                }
            }
            let d = &sv["paired"]["rl_minus_sft"][key];
            if d.is_object() {
                let _ = writeln!(
                    s,
                    " {:+.3} [{:+.3}, {:+.3}] |",
                    d["mean"].as_f64().unwrap_or(f64::NAN),
                    d["lo"].as_f64().unwrap_or(f64::NAN),
                    d["hi"].as_f64().unwrap_or(f64::NAN)
                );
            } else {
                let _ = writeln!(s, " |");
            }
        }
        let _ = writeln!(s, "\nDriving score per family:\n");
        let _ = writeln!(s, "| family | {} |", names.join(" | "));
        let _ = writeln!(s, "|---|{}", "---:|".repeat(names.len()));
        if let Some(fams) = sv[names[0]]["families"].as_object() {
            for f in fams.keys() {
                let _ = write!(s, "| {f} |");
                for n in &names {
                    let _ = write!(
                        s,
                        " {} |",
                        num(sv[*n]["families"][f]["driving_score"]
                            .as_f64()
                            .unwrap_or(f64::NAN))
                    );
                }
                s.push('\n');
            }
        }
        let _ = writeln!(s, "\n![families](figures/families_{}.svg)\n", split.name);
    }
    let _ = writeln!(s, "## Learning curves\n\n![learning curve](figures/learning_curve.svg)\n\n![returns](figures/learning_returns.svg)\n");
    if !input.examples.is_empty() {
        let _ = writeln!(
            s,
            "## Episodes where the SFT planner fails and the refined one does not\n"
        );
        for ex in &input.examples {
            let _ = writeln!(s, "### {}\n", ex.title);
            for (label, path) in &ex.images {
                let _ = writeln!(s, "{label}:\n\n![{label}]({path})\n");
            }
        }
    }
    let _ = writeln!(
        s,
        "## How to read this\n\nDriving score is the CARLA Leaderboard 2.x score (route completion x infraction multipliers: vehicle collision 0.60, static collision 0.65, red light 0.70, times the fraction of the route driven inside the route lanes). Rates are fractions of episodes with at least one event. Intervals are 95% percentile bootstraps over scenarios; the RL - SFT column is the paired difference on the same scenarios. Episodes end on a collision, leaving the road, running a red light or being blocked for 60 s; finishing the route or the time limit ends them without a penalty."
    );
    s
}

fn num(x: f64) -> String {
    if !x.is_finite() {
        "-".into()
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.3}")
    }
}
