//! nuPlan's metric-aggregator table (`WeightedAverageMetricAggregator`), as CSV: one row per
//! scenario, one per scenario type, a last `final_score` row; columns `scenario, log_name,
//! scenario_type, num_scenarios, planner_name, aggregator_type`, one column per metric in
//! name order, `score`.
//!
//! Computed as nuPlan computes it: a scenario's score is the product of the multiplier
//! metrics times the weighted average of the others (empty cells skipped; no metric at all
//! scores 0); a scenario type's row holds each metric column's **sum** over its scenarios
//! (nuPlan's aggregator sums there) and the mean score; the final row holds each column's sum
//! over all scenarios divided by their number (a mean) and the mean score. Scores are in [0, 1]
//! as nuPlan's are (`report.json`'s `nuplan_score` is the same number times 100). Cells nuPlan
//! leaves empty (a scenario row's `num_scenarios`, an aggregate row's `log_name`) are empty.

use deltaplan_sim::NuplanMetrics;

use super::pyfloat::repr;

/// The metric columns, in nuPlan's (alphabetical) order.
pub const METRIC_COLUMNS: [&str; 8] = [
    "drivable_area_compliance",
    "driving_direction_compliance",
    "ego_is_comfortable",
    "ego_is_making_progress",
    "ego_progress_along_expert_route",
    "no_ego_at_fault_collisions",
    "speed_limit_compliance",
    "time_to_collision_within_bound",
];

/// The metrics that multiply the score (nuPlan's `multiple_metrics`).
pub const MULTIPLIERS: [&str; 4] = [
    "no_ego_at_fault_collisions",
    "drivable_area_compliance",
    "ego_is_making_progress",
    "driving_direction_compliance",
];

/// The weights of the averaged metrics (nuPlan's closed-loop `metric_weights`; others 1).
pub const WEIGHTS: [(&str, f64); 4] = [
    ("ego_progress_along_expert_route", 5.0),
    ("time_to_collision_within_bound", 5.0),
    ("speed_limit_compliance", 4.0),
    ("ego_is_comfortable", 2.0),
];

/// nuPlan's `aggregator_type` of this table.
pub const AGGREGATOR_TYPE: &str = "weighted_average";
/// The `scenario` and `scenario_type` of the last row.
pub const FINAL_SCORE: &str = "final_score";

/// One row of the table.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub scenario: String,
    pub log_name: Option<String>,
    pub scenario_type: String,
    pub num_scenarios: Option<usize>,
    pub planner_name: String,
    /// One value per [`METRIC_COLUMNS`]; `None` is an empty cell.
    pub metrics: [Option<f64>; 8],
    pub score: f64,
}

/// The metric cells of one episode, in [`METRIC_COLUMNS`] order; every cell empty when
/// nothing was measured (`None`: a non-finite plan or state).
pub fn metric_cells(m: Option<&NuplanMetrics>) -> [Option<f64>; 8] {
    let Some(m) = m else {
        return [None; 8];
    };
    [
        m.drivable_area_compliance,
        m.driving_direction_compliance,
        m.ego_is_comfortable,
        m.ego_is_making_progress,
        m.ego_progress_along_expert_route,
        m.no_ego_at_fault_collisions,
        m.speed_limit_compliance,
        m.time_to_collision_within_bound,
    ]
    .map(|v| Some(f64::from(v)))
}

/// nuPlan's scenario score of metric cells: the multipliers' product times the weighted
/// average of the other cells, in column order, empty cells skipped (0 if none is left).
pub fn scenario_score(metrics: &[Option<f64>; 8]) -> f64 {
    let mut weighted_sum = 0.0;
    let mut weights = 0.0;
    let mut factor = 1.0;
    for (name, value) in METRIC_COLUMNS.iter().zip(metrics) {
        let Some(v) = *value else { continue };
        if MULTIPLIERS.contains(name) {
            factor *= v;
        } else {
            let w = WEIGHTS
                .iter()
                .find(|(n, _)| n == name)
                .map_or(1.0, |&(_, w)| w);
            weights += w;
            weighted_sum += w * v;
        }
    }
    let average = if weights > 0.0 {
        weighted_sum / weights
    } else {
        0.0
    };
    factor * average
}

/// A scenario's row.
pub fn scenario_row(
    scenario: String,
    log_name: String,
    scenario_type: String,
    planner_name: String,
    metrics: [Option<f64>; 8],
) -> Row {
    Row {
        scenario,
        log_name: Some(log_name),
        scenario_type,
        num_scenarios: None,
        planner_name,
        score: scenario_score(&metrics),
        metrics,
    }
}

/// The whole table: the scenario rows, then one row per scenario type (in order of first
/// appearance), then the `final_score` row.
pub fn table(scenarios: Vec<Row>) -> Vec<Row> {
    let mut types: Vec<&str> = Vec::new();
    for r in &scenarios {
        if !types.contains(&r.scenario_type.as_str()) {
            types.push(&r.scenario_type);
        }
    }
    let planner = scenarios
        .first()
        .map(|r| r.planner_name.clone())
        .unwrap_or_default();
    let type_rows: Vec<Row> = types
        .iter()
        .map(|&t| {
            let rows: Vec<&Row> = scenarios.iter().filter(|r| r.scenario_type == t).collect();
            let metrics = std::array::from_fn(|k| sum(rows.iter().map(|r| r.metrics[k])));
            Row {
                scenario: t.to_string(),
                log_name: None,
                scenario_type: t.to_string(),
                num_scenarios: Some(rows.len()),
                planner_name: planner.clone(),
                metrics,
                score: rows.iter().map(|r| r.score).sum::<f64>() / rows.len() as f64,
            }
        })
        .collect();
    let total: usize = type_rows.iter().filter_map(|r| r.num_scenarios).sum();
    let per_scenario = |s: Option<f64>| s.map(|s| s / total as f64);
    let final_row = Row {
        scenario: FINAL_SCORE.into(),
        log_name: None,
        scenario_type: FINAL_SCORE.into(),
        num_scenarios: Some(total),
        planner_name: planner,
        metrics: std::array::from_fn(|k| per_scenario(sum(type_rows.iter().map(|r| r.metrics[k])))),
        score: type_rows
            .iter()
            .map(|r| r.score * r.num_scenarios.unwrap_or(0) as f64)
            .sum::<f64>()
            / total.max(1) as f64,
    };
    let mut rows = scenarios;
    rows.extend(type_rows);
    rows.push(final_row);
    rows
}

/// The table as CSV: a header, then the rows; numbers as Python writes them, empty cells
/// empty.
pub fn to_csv(rows: &[Row]) -> String {
    let mut header = vec![
        "scenario",
        "log_name",
        "scenario_type",
        "num_scenarios",
        "planner_name",
        "aggregator_type",
    ];
    header.extend(METRIC_COLUMNS);
    header.push("score");
    let mut out = header.join(",");
    out.push('\n');
    for r in rows {
        let mut cells = vec![
            cell(&r.scenario),
            r.log_name.as_deref().map(cell).unwrap_or_default(),
            cell(&r.scenario_type),
            r.num_scenarios.map(|n| n.to_string()).unwrap_or_default(),
            cell(&r.planner_name),
            AGGREGATOR_TYPE.to_string(),
        ];
        cells.extend(r.metrics.iter().map(|m| m.map(repr).unwrap_or_default()));
        cells.push(repr(r.score));
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    out
}

/// The sum of the present values; `None` when none is.
fn sum(values: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    values
        .flatten()
        .fold(None, |acc, v| Some(acc.unwrap_or(0.0) + v))
}

/// A text cell, quoted as CSV requires when it holds a comma, a quote or a line break.
fn cell(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}
