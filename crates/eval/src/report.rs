//! The SFT-vs-RL report: `report.json` (machine-readable), `report.md` (tables with embedded
//! figures) and SVG figures, all built from one typed [`Report`] computed once from the runs.
//!
//! `report.json` holds `splits.<split>.<policy>.<metric>` as plain numbers (driving score and
//! route completion 0-100, rates as fractions), with intervals under
//! `splits.<split>.<policy>.ci.<metric> = [lo, hi]`, per-family numbers under
//! `splits.<split>.<policy>.families.<family>.<metric>`, and paired differences under
//! `splits.<split>.paired.<b>_minus_<a>.<metric> = {mean, lo, hi}`. Other tools and CI read
//! these names: they are a file format, not an implementation detail.

use std::fmt::Write;
use std::path::Path;

use deltaplan_sim::{EndReason, EpisodeStats};
use serde_json::{json, Map, Value};

use crate::metric::{Metric, PerMetric};
use crate::plot::{grouped_bars, line_chart, Bar, Series};
use crate::stats::{paired_differences, summarize, Estimate, Summaries, Summary};
use crate::{EvalError, Result};
use deltaplan_sim::DisplacementError;

/// The three planners a report compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Policy {
    /// The privileged expert (the demonstrations' teacher).
    Expert,
    /// The frozen behaviour-cloned planner.
    Sft,
    /// The SFT planner with the PPO-refined residual.
    Rl,
}

impl Policy {
    pub const ALL: [Policy; 3] = [Policy::Expert, Policy::Sft, Policy::Rl];

    /// The key in `report.json` and the name of evaluation files.
    pub fn name(self) -> &'static str {
        match self {
            Policy::Expert => "expert",
            Policy::Sft => "sft",
            Policy::Rl => "rl",
        }
    }
}

/// The paired comparisons `(a, b)` the report shows as `b - a`, in this order.
pub const PAIRS: [(Policy, Policy); 3] = [
    (Policy::Sft, Policy::Rl),
    (Policy::Expert, Policy::Rl),
    (Policy::Expert, Policy::Sft),
];

/// One policy's closed-loop episodes on one split, with its open-loop errors.
pub struct PolicyRun {
    pub episodes: Vec<EpisodeStats>,
    /// Open-loop ADE/FDE against the expert on held-out demonstrations, metres.
    pub open_loop: DisplacementError,
}

/// All policies on one split (same scenarios, same order).
pub struct SplitRun {
    pub name: String,
    pub expert: PolicyRun,
    pub sft: PolicyRun,
    pub rl: PolicyRun,
}

impl SplitRun {
    pub fn policy(&self, p: Policy) -> &PolicyRun {
        match p {
            Policy::Expert => &self.expert,
            Policy::Sft => &self.sft,
            Policy::Rl => &self.rl,
        }
    }
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

/// Everything the report shows, as measured.
pub struct ReportInput {
    pub splits: Vec<SplitRun>,
    pub curve: Vec<CurvePoint>,
    pub wall_seconds: f64,
    pub env_steps: u64,
    pub examples: Vec<Example>,
    /// Free-form lines for the header (configuration, seeds).
    pub notes: Vec<String>,
    /// Where the wall time went: (stage or phase, seconds), in the order shown.
    pub timings: Vec<(String, f64)>,
}

/// One policy's numbers on one split.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicySummary {
    pub summaries: Summaries,
    pub open_loop: DisplacementError,
    /// How many episodes ended for each reason, in the order of [`EndReason`]'s variants.
    pub endings: Vec<(EndReason, usize)>,
}

/// The paired difference `b - a` of every metric.
#[derive(Clone, Debug, PartialEq)]
pub struct PairedSummary {
    pub a: Policy,
    pub b: Policy,
    pub difference: PerMetric<Estimate>,
}

/// Every number of one split.
#[derive(Clone, Debug, PartialEq)]
pub struct SplitSummary {
    pub name: String,
    pub scenarios: usize,
    pub expert: PolicySummary,
    pub sft: PolicySummary,
    pub rl: PolicySummary,
    /// In the order of [`PAIRS`].
    pub paired: Vec<PairedSummary>,
}

impl SplitSummary {
    pub fn policy(&self, p: Policy) -> &PolicySummary {
        match p {
            Policy::Expert => &self.expert,
            Policy::Sft => &self.sft,
            Policy::Rl => &self.rl,
        }
    }

    /// The paired difference `b - a`, if the report computes that pair.
    pub fn paired(&self, a: Policy, b: Policy) -> Option<&PerMetric<Estimate>> {
        self.paired
            .iter()
            .find(|p| p.a == a && p.b == b)
            .map(|p| &p.difference)
    }
}

/// The report: every summary computed once, then written as JSON, Markdown and figures.
pub struct Report {
    pub splits: Vec<SplitSummary>,
    pub curve: Vec<CurvePoint>,
    pub wall_seconds: f64,
    pub env_steps: u64,
    pub examples: Vec<Example>,
    pub notes: Vec<String>,
    pub timings: Vec<(String, f64)>,
}

impl Report {
    /// Summarises every policy of every split, with the paired differences of [`PAIRS`].
    pub fn new(input: ReportInput) -> Result<Report> {
        let splits = input
            .splits
            .iter()
            .map(split_summary)
            .collect::<Result<_>>()?;
        Ok(Report {
            splits,
            curve: input.curve,
            wall_seconds: input.wall_seconds,
            env_steps: input.env_steps,
            examples: input.examples,
            notes: input.notes,
            timings: input.timings,
        })
    }

    /// `report.json`'s value (see the module docs for its layout).
    pub fn to_json(&self) -> Value {
        let splits: Map<String, Value> = self
            .splits
            .iter()
            .map(|s| (s.name.clone(), split_json(s)))
            .collect();
        json!({
            "splits": splits,
            "wall_seconds": self.wall_seconds,
            "env_steps": self.env_steps,
            "learning_curve": self.curve,
            "notes": self.notes,
            "timings": self.timings.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<Map<String, Value>>(),
        })
    }

    /// `report.md`: the tables, the figures' links, the examples and how to read them.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# deltaplan: SFT planner vs RL-refined planner, closed loop\n"
        );
        for n in &self.notes {
            let _ = writeln!(s, "- {n}");
        }
        let _ = writeln!(
            s,
            "- wall time {:.0} s, {} environment steps of RL refinement\n",
            self.wall_seconds, self.env_steps
        );
        for split in &self.splits {
            split_markdown(&mut s, split);
        }
        if !self.timings.is_empty() {
            let _ = writeln!(
                s,
                "## Where the time went\n\n| stage or phase | seconds |\n|---|---:|"
            );
            for (k, v) in &self.timings {
                let _ = writeln!(s, "| {k} | {v:.1} |");
            }
            let _ = writeln!(s);
        }
        let _ = writeln!(s, "## Learning curves\n\n![learning curve](figures/learning_curve.svg)\n\n![returns](figures/learning_returns.svg)\n");
        if !self.examples.is_empty() {
            let _ = writeln!(
                s,
                "## Episodes where the SFT planner fails and the refined one does not\n"
            );
            for ex in &self.examples {
                let _ = writeln!(s, "### {}\n", ex.title);
                for (label, path) in &ex.images {
                    let _ = writeln!(s, "{label}:\n\n![{label}]({path})\n");
                }
            }
        }
        let _ = writeln!(
            s,
            "## How to read this\n\nDriving score is the CARLA Leaderboard 2.x score (route completion x infraction multipliers: vehicle collision 0.60, static collision 0.65, red light 0.70, times the fraction of the route driven inside the route lanes). Rates are fractions of episodes with at least one event. Intervals are 95% percentile bootstraps over scenarios; the RL - SFT column is the paired difference on the same scenarios. A failure is an episode with a collision, an off-road event or a non-finite plan or vehicle state (a broken planner fails; it never scores). Episodes end on a collision, leaving the road, running a red light, being blocked for 60 s or a non-finite plan or state; finishing the route or the time limit ends them without a penalty."
        );
        s
    }
}

/// Summarises `input` and writes `report.json`, `report.md` and the figures into `dir`
/// (created if needed), each file atomically.
pub fn write_report(dir: &Path, input: ReportInput) -> Result<Report> {
    let report = Report::new(input)?;
    let json_path = dir.join("report.json");
    let json = serde_json::to_string_pretty(&report.to_json()).map_err(|e| EvalError::Io {
        path: json_path.display().to_string(),
        source: e.into(),
    })?;
    write(&json_path, &json)?;
    let figs = dir.join("figures");
    write(
        &figs.join("learning_curve.svg"),
        &learning_curve_svg(&report.curve),
    )?;
    write(
        &figs.join("learning_returns.svg"),
        &learning_returns_svg(&report.curve),
    )?;
    for split in &report.splits {
        write(
            &figs.join(format!("families_{}.svg", split.name)),
            &families_svg(split),
        )?;
    }
    write(&dir.join("report.md"), &report.markdown())?;
    Ok(report)
}

fn write(path: &Path, text: &str) -> Result<()> {
    deltaplan_stdx::fs::write_atomic(path, text.as_bytes()).map_err(|source| EvalError::Io {
        path: path.display().to_string(),
        source,
    })
}

fn split_summary(run: &SplitRun) -> Result<SplitSummary> {
    let policy = |p: Policy| {
        let r = run.policy(p);
        PolicySummary {
            summaries: summarize(&r.episodes),
            open_loop: r.open_loop,
            endings: endings(&r.episodes),
        }
    };
    let paired = PAIRS
        .iter()
        .map(|&(a, b)| {
            Ok(PairedSummary {
                a,
                b,
                difference: paired_differences(&run.policy(a).episodes, &run.policy(b).episodes)?,
            })
        })
        .collect::<Result<_>>()?;
    Ok(SplitSummary {
        name: run.name.clone(),
        scenarios: run.expert.episodes.len(),
        expert: policy(Policy::Expert),
        sft: policy(Policy::Sft),
        rl: policy(Policy::Rl),
        paired,
    })
}

/// Episode counts per end reason, ordered by the reason's declaration order.
fn endings(episodes: &[EpisodeStats]) -> Vec<(EndReason, usize)> {
    let mut counts: Vec<(EndReason, usize)> = Vec::new();
    for e in episodes {
        match counts.iter_mut().find(|(r, _)| *r == e.end) {
            Some((_, n)) => *n += 1,
            None => counts.push((e.end, 1)),
        }
    }
    counts.sort_by_key(|&(r, _)| r as u8);
    counts
}

fn means_json(s: &Summary) -> Map<String, Value> {
    s.estimates
        .iter()
        .map(|(m, e)| (m.name().to_string(), json!(e.mean)))
        .collect()
}

fn policy_json(p: &PolicySummary) -> Value {
    let overall = &p.summaries.overall;
    let mut m = means_json(overall);
    m.insert("ade".into(), json!(p.open_loop.ade));
    m.insert("fde".into(), json!(p.open_loop.fde));
    m.insert("episodes".into(), json!(overall.episodes));
    let ci: Map<String, Value> = overall
        .estimates
        .iter()
        .map(|(m, e)| (m.name().to_string(), json!([e.lo, e.hi])))
        .collect();
    m.insert("ci".into(), Value::Object(ci));
    let families: Map<String, Value> = p
        .summaries
        .families
        .iter()
        .map(|(f, s)| (f.name().to_string(), Value::Object(means_json(s))))
        .collect();
    m.insert("families".into(), Value::Object(families));
    Value::Object(m)
}

fn split_json(split: &SplitSummary) -> Value {
    let mut sp: Map<String, Value> = Policy::ALL
        .iter()
        .map(|&p| (p.name().to_string(), policy_json(split.policy(p))))
        .collect();
    let paired: Map<String, Value> = split
        .paired
        .iter()
        .map(|p| {
            let d: Map<String, Value> = p
                .difference
                .iter()
                .map(|(m, e)| (m.name().to_string(), json!(e)))
                .collect();
            (
                format!("{}_minus_{}", p.b.name(), p.a.name()),
                Value::Object(d),
            )
        })
        .collect();
    sp.insert("paired".into(), Value::Object(paired));
    Value::Object(sp)
}

fn split_markdown(s: &mut String, split: &SplitSummary) {
    let names: Vec<&str> = Policy::ALL.iter().map(|p| p.name()).collect();
    let _ = writeln!(
        s,
        "## Split `{}` ({} scenarios)\n",
        split.name, split.scenarios
    );
    let _ = writeln!(
        s,
        "| metric | {} | RL - SFT (paired, 95% CI) |",
        names.join(" | ")
    );
    let _ = writeln!(s, "|---|{}---|", "---:|".repeat(names.len()));
    let rl_minus_sft = split.paired(Policy::Sft, Policy::Rl);
    for m in Metric::ALL {
        let _ = write!(s, "| {} |", m.label());
        for p in Policy::ALL {
            let e = split.policy(p).summaries.overall[m];
            let _ = write!(s, " {} [{}, {}] |", num(e.mean), num(e.lo), num(e.hi));
        }
        match rl_minus_sft {
            Some(d) => {
                let d = d[m];
                let _ = writeln!(s, " {:+.3} [{:+.3}, {:+.3}] |", d.mean, d.lo, d.hi);
            }
            None => {
                let _ = writeln!(s, " |");
            }
        }
    }
    let open_loop_rows = [
        (
            "Open-loop ADE (m)",
            Policy::ALL.map(|p| split.policy(p).open_loop.ade),
        ),
        (
            "Open-loop FDE (m)",
            Policy::ALL.map(|p| split.policy(p).open_loop.fde),
        ),
    ];
    for (label, values) in open_loop_rows {
        let _ = write!(s, "| {label} |");
        for v in values {
            let _ = write!(s, " {} |", num(v));
        }
        let _ = writeln!(s, " |");
    }

    let _ = writeln!(s, "\nDriving score per family:\n");
    let _ = writeln!(s, "| family | {} |", names.join(" | "));
    let _ = writeln!(s, "|---|{}", "---:|".repeat(names.len()));
    for (f, _) in &split.expert.summaries.families {
        let _ = write!(s, "| {} |", f.name());
        for p in Policy::ALL {
            let score = split
                .policy(p)
                .summaries
                .family(*f)
                .map_or(f64::NAN, |fs| fs[Metric::DrivingScore].mean);
            let _ = write!(s, " {} |", num(score));
        }
        s.push('\n');
    }

    let _ = writeln!(s, "\nHow episodes ended (number of episodes):\n");
    let _ = writeln!(s, "| ending | {} |", names.join(" | "));
    let _ = writeln!(s, "|---|{}", "---:|".repeat(names.len()));
    let mut reasons: Vec<EndReason> = Policy::ALL
        .iter()
        .flat_map(|&p| split.policy(p).endings.iter().map(|&(r, _)| r))
        .collect();
    reasons.sort_by_key(|&r| r as u8);
    reasons.dedup();
    for r in reasons {
        let _ = write!(s, "| {r:?} |");
        for p in Policy::ALL {
            let n = split
                .policy(p)
                .endings
                .iter()
                .find(|(x, _)| *x == r)
                .map_or(0, |&(_, n)| n);
            let _ = write!(s, " {n} |");
        }
        s.push('\n');
    }
    let _ = writeln!(s, "\n![families](figures/families_{}.svg)\n", split.name);
}

fn learning_curve_svg(curve: &[CurvePoint]) -> String {
    line_chart(
        "Closed-loop driving score of training episodes",
        "environment steps",
        "driving score",
        &[Series {
            name: "RL (training episodes)",
            points: curve
                .iter()
                .map(|p| (p.env_steps, p.driving_score))
                .collect(),
        }],
    )
}

fn learning_returns_svg(curve: &[CurvePoint]) -> String {
    line_chart(
        "Episode return and failure rate during refinement",
        "environment steps",
        "return / failure %",
        &[
            Series {
                name: "episode return",
                points: curve
                    .iter()
                    .map(|p| (p.env_steps, p.episode_return))
                    .collect(),
            },
            Series {
                name: "failures (collision, off-road or non-finite), % of episodes",
                points: curve
                    .iter()
                    .map(|p| (p.env_steps, 100.0 * p.failure_rate))
                    .collect(),
            },
        ],
    )
}

fn families_svg(split: &SplitSummary) -> String {
    let names: Vec<&str> = Policy::ALL.iter().map(|p| p.name()).collect();
    let groups: Vec<(String, Vec<Bar>)> = split
        .expert
        .summaries
        .families
        .iter()
        .map(|(f, _)| {
            let bars = Policy::ALL
                .iter()
                .map(|&p| {
                    let e = split
                        .policy(p)
                        .summaries
                        .family(*f)
                        .map(|fs| fs[Metric::DrivingScore])
                        .unwrap_or_default();
                    Bar {
                        value: e.mean,
                        lo: e.lo,
                        hi: e.hi,
                    }
                })
                .collect();
            (f.name().to_string(), bars)
        })
        .collect();
    grouped_bars(
        &format!("Driving score per family ({} split, 95% CI)", split.name),
        "driving score",
        &names,
        &groups,
        100.0,
    )
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
