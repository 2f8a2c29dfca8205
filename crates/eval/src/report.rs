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

use deltaplan_sim::{EndReason, EpisodeStats, Family};
use serde_json::{json, Map, Value};

use crate::families::{
    failure_types, family_differences, FailureCounts, FamilyDifference, WORSE_BY_POINTS,
};
use crate::metric::{Metric, PerMetric, Unit};
use crate::plot::{
    difference_chart, grouped_bars, signed, Bar, Difference, Line, LineChart, Marker, Reference,
    PALETTE,
};
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

    /// The policy's colour in every chart (the bar charts' order).
    pub fn colour(self) -> &'static str {
        PALETTE[self as usize % PALETTE.len()]
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

/// Where the actor starts learning: the first refinement iteration whose update stepped the
/// actor (before it, only the critic warms up).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct ActorStart {
    pub iteration: usize,
    /// Environment steps at the end of that iteration's rollout (the curve's x).
    pub env_steps: f64,
}

/// One setting whose value differs from the embedded default.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ConfigDifference {
    /// Dotted key, as `--set` spells it.
    pub key: String,
    /// The embedded default as TOML (`(unset)` for an optional setting).
    pub default: String,
    /// This run's value as TOML.
    pub value: String,
}

/// An evaluation episode rendered for several policies at one crop and scale (paths relative
/// to the report directory).
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    /// `split_family_seed` (the seed relative to the split's first seed): in the report, in
    /// every file name of this example.
    pub id: String,
    pub title: String,
    /// (label, path) of each policy's picture, same crop and scale.
    pub images: Vec<(String, String)>,
    /// Frames of both policies around the step where they first diverge.
    pub filmstrip: Option<String>,
    /// Speed and acceleration over time of both policies.
    pub motion: Option<String>,
    /// The `deltaplan` command line that writes these files again.
    pub command: String,
}

impl Example {
    /// Every file of the example.
    pub fn files(&self) -> Vec<&str> {
        self.images
            .iter()
            .map(|(_, p)| p.as_str())
            .chain(self.filmstrip.as_deref())
            .chain(self.motion.as_deref())
            .collect()
    }
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
    /// The first iteration that updated the actor (`None` if the log has none).
    pub actor_start: Option<ActorStart>,
    /// The run's settings that differ from the embedded defaults, in key order.
    pub config_differences: Vec<ConfigDifference>,
    /// Evaluations in other worlds found beside the run's own (SUMO), each a titled table.
    pub other_worlds: Vec<WorldTable>,
}

/// A table of scores from another world (a SUMO evaluation: one row per network).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct WorldTable {
    pub title: String,
    /// A Markdown table.
    pub table: String,
}

/// One policy's numbers on one split.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicySummary {
    pub summaries: Summaries,
    pub open_loop: DisplacementError,
    /// How many episodes ended for each reason, in the order of [`EndReason`]'s variants.
    pub endings: Vec<(EndReason, usize)>,
    /// Failure and infraction counts over all episodes.
    pub failures: FailureCounts,
    /// The same per family, ordered by family name.
    pub failure_types: Vec<(Family, FailureCounts)>,
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
    /// The paired RL - SFT driving-score difference per family, ordered by family name.
    pub family_differences: Vec<FamilyDifference>,
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

    /// The families where the refined planner is worse than SFT (either flag of
    /// [`FamilyDifference`]).
    pub fn flagged_families(&self) -> impl Iterator<Item = &FamilyDifference> {
        self.family_differences.iter().filter(|d| d.flagged())
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
    pub actor_start: Option<ActorStart>,
    pub config_differences: Vec<ConfigDifference>,
    pub other_worlds: Vec<WorldTable>,
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
            actor_start: input.actor_start,
            config_differences: input.config_differences,
            other_worlds: input.other_worlds,
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
            "actor_start": self.actor_start,
            "config_differences": self.config_differences,
            "other_worlds": self.other_worlds,
            "examples": self.examples.iter().map(|e| json!({
                "id": e.id,
                "files": e.files(),
                "command": e.command,
            })).collect::<Vec<_>>(),
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
        config_markdown(&mut s, &self.config_differences);
        for split in &self.splits {
            split_markdown(&mut s, split);
        }
        if !self.other_worlds.is_empty() {
            let _ = writeln!(
                s,
                "## In SUMO

The run's planners evaluated in SUMO (`deltaplan evaluate --world sumo`; all of them in a run trained in SUMO), per network; SUMO's traffic, maps and lights, deltaplan's controller and checks (SUMO's driver model drives with SUMO's own car following, checked by deltaplan).
"
            );
            for w in &self.other_worlds {
                let _ = writeln!(
                    s,
                    "### {}

{}",
                    w.title, w.table
                );
            }
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
        let _ = writeln!(s, "## Learning curves\n");
        let _ = writeln!(
            s,
            "Training episodes end in worlds whose difficulty is drawn between the `eval` and the `hard` split's, so the evaluated SFT and expert levels of both splits are drawn as reference lines. Faint: per iteration; bold: exponential moving average.\n"
        );
        let _ = writeln!(s, "![learning curve](figures/learning_curve.svg)\n\n![returns](figures/learning_returns.svg)\n");
        if !self.examples.is_empty() {
            let _ = writeln!(
                s,
                "## Episodes where the SFT planner fails and the refined one does not\n"
            );
            for ex in &self.examples {
                example_markdown(&mut s, ex);
            }
        }
        let _ = writeln!(
            s,
            "## How to read this\n\nDriving score is the CARLA Leaderboard 2.x score (route completion x infraction multipliers: vehicle collision 0.60, static collision 0.65, red light 0.70, times the fraction of the route driven inside the route lanes). Rates are fractions of episodes with at least one event. Intervals are 95% percentile bootstraps over scenarios; the RL - SFT column is the paired difference on the same scenarios. A failure is an episode with a collision, an off-road event or a non-finite plan or vehicle state (a broken planner fails; it never scores). Episodes end on a collision, leaving the road, running a red light, being blocked for 60 s or a non-finite plan or state; finishing the route or the time limit ends them without a penalty."
        );
        let _ = writeln!(
            s,
            "\nThe same episodes in the field's formats, per split and policy: `eval/<split>/<policy>/carla_leaderboard.json` (CARLA Leaderboard 2.x results; its average driving score is the driving score above), `eval/<split>/<policy>/nuplan_aggregator.csv` (nuPlan's metric-aggregator table; its final score is the nuPlan score above / 100), and `README.md` beside them listing what deltaplan approximates or does not measure."
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
        &learning_curve_svg(&report),
    )?;
    write(
        &figs.join("learning_returns.svg"),
        &learning_returns_svg(&report),
    )?;
    for split in &report.splits {
        write(
            &figs.join(format!("families_{}.svg", split.name)),
            &families_svg(split, Metric::DrivingScore),
        )?;
        write(
            &figs.join(format!("comfort_{}.svg", split.name)),
            &families_svg(split, Metric::ComfortPassRate),
        )?;
        write(
            &figs.join(format!("nuplan_{}.svg", split.name)),
            &families_svg(split, Metric::NuplanScore),
        )?;
        write(
            &figs.join(format!("family_differences_{}.svg", split.name)),
            &family_differences_svg(split),
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
            failures: FailureCounts::of(&r.episodes),
            failure_types: failure_types(&r.episodes),
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
        family_differences: family_differences(&run.sft.episodes, &run.rl.episodes)?,
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
    let differences: Map<String, Value> = split
        .family_differences
        .iter()
        .map(|d| {
            (
                d.family.name().to_string(),
                json!({
                    "driving_score": d.difference,
                    "worse_by_more_than_1": d.worse_by_more_than_a_point(),
                    "interval_below_zero": d.interval_below_zero(),
                }),
            )
        })
        .collect();
    sp.insert(
        "family_differences".into(),
        json!({ "rl_minus_sft": differences }),
    );
    sp.insert(
        "flagged_families".into(),
        json!(split
            .flagged_families()
            .map(|d| d.family.name())
            .collect::<Vec<_>>()),
    );
    let failures: Map<String, Value> = Policy::ALL
        .iter()
        .map(|&p| {
            let ps = split.policy(p);
            let mut per: Map<String, Value> = ps
                .failure_types
                .iter()
                .map(|(f, c)| (f.name().to_string(), failure_json(c)))
                .collect();
            per.insert("all".into(), failure_json(&ps.failures));
            (p.name().to_string(), Value::Object(per))
        })
        .collect();
    sp.insert("failure_types".into(), Value::Object(failures));
    Value::Object(sp)
}

fn failure_json(c: &FailureCounts) -> Value {
    let mut m: Map<String, Value> = FailureCounts::NAMES
        .iter()
        .zip(c.values())
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    m.insert("episodes".into(), json!(c.episodes));
    Value::Object(m)
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

    family_markdown(s, split);
    failure_types_markdown(s, split);

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
    let n = &split.name;
    let _ = writeln!(s, "\n![families](figures/families_{n}.svg)\n");
    let _ = writeln!(
        s,
        "![RL - SFT per family](figures/family_differences_{n}.svg)\n"
    );
    let _ = writeln!(s, "![comfort per family](figures/comfort_{n}.svg)\n");
    let _ = writeln!(s, "![nuPlan score per family](figures/nuplan_{n}.svg)\n");
}

/// Per family: driving score, the paired RL - SFT difference with its flags, comfort pass
/// rate and nuPlan score of every policy.
fn family_markdown(s: &mut String, split: &SplitSummary) {
    let flagged: Vec<String> = split
        .flagged_families()
        .map(|d| {
            format!(
                "{} ({} [{}, {}])",
                d.family.name(),
                signed(d.difference.mean),
                signed(d.difference.lo),
                signed(d.difference.hi)
            )
        })
        .collect();
    let _ = writeln!(s, "\n### Per family (expert / SFT / RL)\n");
    if flagged.is_empty() {
        let _ = writeln!(
            s,
            "No family where the refined planner is worse than SFT (by more than {WORSE_BY_POINTS} point, or with the paired interval below zero).\n"
        );
    } else {
        let _ = writeln!(
            s,
            "**Families where the refined planner is worse than SFT:** {}.\n",
            flagged.join(", ")
        );
    }
    let _ = writeln!(
        s,
        "| family | driving score | RL - SFT (paired, 95% CI) | RL worse? | comfort pass | nuPlan score |"
    );
    let _ = writeln!(s, "|---|---:|---:|---|---:|---:|");
    let of = |p: Policy, f: Family, m: Metric| {
        split
            .policy(p)
            .summaries
            .family(f)
            .map_or(f64::NAN, |fs| fs[m].mean)
    };
    let three = |f: Family, m: Metric, show: fn(f64) -> String| {
        Policy::ALL.map(|p| show(of(p, f, m))).join(" / ")
    };
    for (f, _) in &split.expert.summaries.families {
        let d = split.family_differences.iter().find(|d| d.family == *f);
        let (diff, flag) = match d {
            Some(d) => (
                format!(
                    "{} [{}, {}]",
                    signed(d.difference.mean),
                    signed(d.difference.lo),
                    signed(d.difference.hi)
                ),
                flag_text(d),
            ),
            None => ("-".into(), String::new()),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {diff} | {flag} | {} | {} |",
            f.name(),
            three(*f, Metric::DrivingScore, points),
            three(*f, Metric::ComfortPassRate, percent),
            three(*f, Metric::NuplanScore, points),
        );
    }
    let all = |m: Metric, show: fn(f64) -> String| {
        Policy::ALL
            .map(|p| show(split.policy(p).summaries.overall[m].mean))
            .join(" / ")
    };
    let overall = split
        .paired(Policy::Sft, Policy::Rl)
        .map(|d| d[Metric::DrivingScore])
        .unwrap_or(Estimate::UNDEFINED);
    let _ = writeln!(
        s,
        "| **all** | {} | {} [{}, {}] | | {} | {} |",
        all(Metric::DrivingScore, points),
        signed(overall.mean),
        signed(overall.lo),
        signed(overall.hi),
        all(Metric::ComfortPassRate, percent),
        all(Metric::NuplanScore, points),
    );
}

/// The flags of one family, as report.md shows them.
fn flag_text(d: &FamilyDifference) -> String {
    match (d.worse_by_more_than_a_point(), d.interval_below_zero()) {
        (true, true) => format!("**worse by > {WORSE_BY_POINTS} point, CI below 0**"),
        (true, false) => format!("**worse by > {WORSE_BY_POINTS} point**"),
        (false, true) => "**CI below 0**".into(),
        (false, false) => String::new(),
    }
}

/// Failure and infraction counts per family, each cell `expert / SFT / RL`.
fn failure_types_markdown(s: &mut String, split: &SplitSummary) {
    let _ = writeln!(
        s,
        "\nFailure types per family (episodes, expert / SFT / RL):\n"
    );
    let _ = writeln!(
        s,
        "| family | episodes | collision | off-road | red light | non-finite | time limit | blocked |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|");
    let row = |s: &mut String, label: &str, counts: [FailureCounts; 3]| {
        let _ = write!(s, "| {label} | {} |", counts[0].episodes);
        for k in 0..FailureCounts::NAMES.len() {
            let cell: Vec<String> = counts.iter().map(|c| c.values()[k].to_string()).collect();
            let _ = write!(s, " {} |", cell.join(" / "));
        }
        s.push('\n');
    };
    for (f, _) in &split.expert.failure_types {
        let counts = Policy::ALL.map(|p| {
            split
                .policy(p)
                .failure_types
                .iter()
                .find(|(g, _)| g == f)
                .map(|(_, c)| *c)
                .unwrap_or_default()
        });
        row(s, f.name(), counts);
    }
    row(s, "**all**", Policy::ALL.map(|p| split.policy(p).failures));
}

/// The settings that differ from the embedded defaults, or a line saying there are none.
fn config_markdown(s: &mut String, differences: &[ConfigDifference]) {
    let _ = writeln!(s, "## Configuration: differences from the defaults\n");
    if differences.is_empty() {
        let _ = writeln!(
            s,
            "None: this run used the embedded defaults (`deltaplan config` prints them).\n"
        );
        return;
    }
    let _ = writeln!(s, "| key | default | this run |");
    let _ = writeln!(s, "|---|---|---|");
    for d in differences {
        let _ = writeln!(
            s,
            "| `{}` | `{}` | `{}` |",
            d.key,
            d.default.replace('|', "\\|"),
            d.value.replace('|', "\\|")
        );
    }
    s.push('\n');
}

/// One example: its identifier, the pictures, the filmstrip and motion chart, its files and
/// the command that writes them again.
fn example_markdown(s: &mut String, ex: &Example) {
    let _ = writeln!(s, "### `{}`: {}\n", ex.id, ex.title);
    for (label, path) in &ex.images {
        let _ = writeln!(s, "{label}:\n\n![{label}]({path})\n");
    }
    if let Some(path) = &ex.filmstrip {
        let _ = writeln!(
            s,
            "Around the moment the two planners first drive more than 1 m apart:\n\n![filmstrip]({path})\n"
        );
    }
    if let Some(path) = &ex.motion {
        let _ = writeln!(s, "![speed and acceleration]({path})\n");
    }
    let files: Vec<String> = ex.files().iter().map(|f| format!("`{f}`")).collect();
    let _ = writeln!(s, "Files: {}. Rendered by:\n", files.join(", "));
    let _ = writeln!(s, "```sh\n{}\n```\n", ex.command);
}

/// Driving score of training episodes (raw faint, smoothed bold) with the evaluated SFT and
/// expert levels of every split and the actor's first update marked.
fn learning_curve_svg(report: &Report) -> String {
    let raw: Vec<(f64, f64)> = report
        .curve
        .iter()
        .map(|p| (p.env_steps, p.driving_score))
        .collect();
    let mut references = Vec::new();
    for split in &report.splits {
        for p in [Policy::Expert, Policy::Sft] {
            let level = split.policy(p).summaries.overall[Metric::DrivingScore].mean;
            references.push(Reference {
                label: format!("{} on {}: {level:.1}", p.name(), split.name),
                y: level,
                colour: p.colour(),
                dashed: split.name != "eval",
            });
        }
    }
    curve_chart(
        report,
        "Driving score of training episodes during refinement",
        "driving score (points, 0-100)",
        vec![Line::smoothed_with_raw(
            "RL training episodes",
            Policy::Rl.colour(),
            raw,
        )],
        references,
    )
}

/// Episode return and failure rate of training episodes, raw and smoothed.
fn learning_returns_svg(report: &Report) -> String {
    let returns: Vec<(f64, f64)> = report
        .curve
        .iter()
        .map(|p| (p.env_steps, p.episode_return))
        .collect();
    let failures: Vec<(f64, f64)> = report
        .curve
        .iter()
        .map(|p| (p.env_steps, 100.0 * p.failure_rate))
        .collect();
    let mut lines = Line::smoothed_with_raw("episode return", PALETTE[0], returns);
    lines.extend(Line::smoothed_with_raw(
        "failures, % of episodes",
        PALETTE[3],
        failures,
    ));
    curve_chart(
        report,
        "Episode return and failures of training episodes",
        "return (reward units) / failures (% of episodes)",
        vec![lines],
        Vec::new(),
    )
}

fn curve_chart(
    report: &Report,
    title: &str,
    y_label: &str,
    lines: Vec<Vec<Line>>,
    references: Vec<Reference>,
) -> String {
    let markers = report
        .actor_start
        .iter()
        .map(|a| Marker {
            label: format!(
                "actor starts (iteration {}, after {} critic warm-up)",
                a.iteration,
                a.iteration.saturating_sub(1)
            ),
            x: a.env_steps,
        })
        .collect();
    LineChart {
        title: title.into(),
        x_label: "environment steps (transitions, all worlds)".into(),
        y_label: y_label.into(),
        lines: lines.into_iter().flatten().collect(),
        references,
        markers,
        ..LineChart::default()
    }
    .to_svg()
}

/// A per-family bar chart of `metric` (rates as percent) with 95% intervals.
fn families_svg(split: &SplitSummary, metric: Metric) -> String {
    let names: Vec<&str> = Policy::ALL.iter().map(|p| p.name()).collect();
    let scale = if metric.unit() == Unit::FractionOfEpisodes {
        100.0
    } else {
        1.0
    };
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
                        .map(|fs| fs[metric])
                        .unwrap_or_default();
                    Bar {
                        value: scale * e.mean,
                        lo: scale * e.lo,
                        hi: scale * e.hi,
                    }
                })
                .collect();
            (f.name().to_string(), bars)
        })
        .collect();
    let (title, y_label) = match metric {
        Metric::ComfortPassRate => (
            "nuPlan comfort pass rate per family",
            "episodes passing comfort (%)",
        ),
        Metric::NuplanScore => (
            "nuPlan closed-loop score per family",
            "nuPlan score (points, 0-100)",
        ),
        _ => ("Driving score per family", "driving score (points, 0-100)"),
    };
    grouped_bars(
        &format!("{title} ({} split, 95% CI)", split.name),
        y_label,
        &names,
        &groups,
        100.0,
    )
}

/// RL - SFT per family with 95% intervals, the -1 point threshold, flagged families in red.
fn family_differences_svg(split: &SplitSummary) -> String {
    let rows: Vec<Difference> = split
        .family_differences
        .iter()
        .map(|d| Difference {
            label: d.family.name().to_string(),
            estimate: d.difference,
            flagged: d.flagged(),
        })
        .collect();
    difference_chart(
        &format!(
            "Driving score RL - SFT per family ({} split, paired 95% CI)",
            split.name
        ),
        "RL - SFT driving score (points)",
        &rows,
        -WORSE_BY_POINTS,
    )
}

fn points(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.1}")
    } else {
        "-".into()
    }
}

fn percent(x: f64) -> String {
    if x.is_finite() {
        format!("{:.1}%", 100.0 * x)
    } else {
        "-".into()
    }
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
