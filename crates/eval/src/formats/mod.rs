//! An evaluation's episodes in the formats the field compares results in, so a number here
//! can be set beside a CARLA Leaderboard 2.x or a nuPlan result with the tools made for those:
//! the leaderboard's results JSON ([`leaderboard`]) and nuPlan's metric-aggregator table
//! ([`nuplan`], CSV). Both are views of the same episode records `report.json` summarises:
//! the leaderboard file's average driving score is `report.json`'s `driving_score` (to its
//! 6-decimal rounding), the table's final score is `nuplan_score` / 100.
//!
//! What deltaplan measures differently from CARLA or nuPlan, or not at all, is stated in
//! [`NOTES`], written as `README.md` beside the two files; a quantity it does not measure is
//! an empty list, 0 or an empty cell, never a number made up.

pub mod leaderboard;
pub mod nuplan;
pub mod pyfloat;

use std::path::{Path, PathBuf};

use deltaplan_sim::{EpisodeStats, Split};

use crate::report::Policy;
use crate::{EvalError, Result};

/// The leaderboard results file's name.
pub const LEADERBOARD_FILE: &str = "carla_leaderboard.json";
/// The nuPlan aggregator table's name.
pub const NUPLAN_FILE: &str = "nuplan_aggregator.csv";
/// The notes' name.
pub const NOTES_FILE: &str = "README.md";

/// Where the formats and deltaplan's measurements part, one line each (the `README.md`
/// beside the files, and the README's section).
pub const NOTES: [&str; 14] = [
    "Route ids: `RouteScenario_<N>_rep0` is scenario `<split>_<family>_<N>` of nuplan_aggregator.csv (N = the scenario seed minus the split's first seed, as in the report's example ids); records are in evaluation order.",
    "Scores are deltaplan's: score_route = route completion, score_penalty = the CARLA 2.x infraction penalty deltaplan computes (vehicle 0.60, layout 0.65, red light 0.70, x (1 - % of the route outside the route lanes)), score_composed = report.json's driving score.",
    "Every infraction ends a deltaplan episode (CARLA drives on after a collision or a red light): such routes are `Failed - Agent collided with a vehicle` / `... with the layout` / `Failed - Agent ran a red light`, deltaplan's wording; `Agent timed out`, `Agent got blocked`, `Agent deviated from the route` and `Agent crashed` (a non-finite plan or state) are the leaderboard's.",
    "route_dev holds deltaplan's off-road event (the ego box left the drivable area), which stands in for CARLA's route deviation (30 m off the route): approximated. The leaderboard's label `Off-road infractions` is its outside_route_lanes entry (kilometres), not deltaplan's off-road events, which are `Route deviations`.",
    "red_light is deltaplan's check (the ego front crossed the stop line while its light was red), not CARLA's (the ego's box crossing the light's trigger area): approximated.",
    "outside_route_lanes: the metres are the route distance driven with the ego box outside the route lane (deltaplan's measure, not CARLA's lane-waypoint test); the message's percentage is of the completed route as in CARLA, while deltaplan's penalty divides by the whole route length (they agree for completed routes).",
    "Collision and red-light messages carry no actor id or position: deltaplan does not record them.",
    "Not measured (always empty or 0): collisions_pedestrian (no pedestrians), stop_infraction (no stop signs), yield_emergency_vehicle_infractions (no emergency vehicles), scenario_timeouts (no scenario triggers), min_speed_infractions (deltaplan does not compare the ego's speed with the traffic around it).",
    "meta.duration_game = steps x step length (simulated seconds); meta.duration_system = 0: deltaplan does not record wall time per route, so the file is byte-identical on every rerun (report.json's timings has the evaluate stage's wall time).",
    "sensors is empty: deltaplan's planners read a 142-float state observation, no CARLA sensors. entry_status `Finished` and eligible `true` follow the leaderboard's own table; they do not make these CARLA Leaderboard results.",
    "nuplan_aggregator.csv: the metric values are deltaplan's nuPlan-style metrics (deltaplan_sim::metrics::nuplan_score): at fault is approximated (rear-ended or hit while standing is not at fault), ego_progress_along_expert_route is progress along the scenario's route (no expert log), time_to_collision_within_bound is the closing time to the leader along the route, driving_direction_compliance is the distance driven more than 90 degrees off the route.",
    "nuplan_aggregator.csv: log_name is the evaluation split the scenario comes from (deltaplan generates scenarios from seeds, there are no logs); scenario_type is the scenario family.",
    "nuplan_aggregator.csv: a scenario whose plan or state stopped being finite has every metric cell empty and score 0 (nuPlan's weighted average of no metric); nuPlan itself would have no row for a scenario without metric values, which would leave the broken episode out of the means.",
    "nuplan_aggregator.csv, as nuPlan's aggregator computes it: a scenario-type row holds each metric's sum over the type's scenarios and their mean score; the final_score row holds each metric's mean over all scenarios and the mean score; scores are in [0, 1] (report.json's nuplan_score x 1/100).",
];

/// One policy's evaluation on one split.
#[derive(Clone, Copy, Debug)]
pub struct FieldRun<'a> {
    pub split: Split,
    pub policy: Policy,
    /// In evaluation order.
    pub episodes: &'a [EpisodeStats],
    /// The simulator's step length, seconds.
    pub dt: f32,
}

/// The paths written by [`write_field_formats`].
#[derive(Clone, Debug, PartialEq)]
pub struct FieldFiles {
    pub leaderboard: PathBuf,
    pub nuplan: PathBuf,
    pub notes: PathBuf,
}

impl FieldFiles {
    /// The files' paths in `dir`.
    pub fn in_dir(dir: &Path) -> FieldFiles {
        FieldFiles {
            leaderboard: dir.join(LEADERBOARD_FILE),
            nuplan: dir.join(NUPLAN_FILE),
            notes: dir.join(NOTES_FILE),
        }
    }

    /// Whether every file is there.
    pub fn exist(&self) -> bool {
        [&self.leaderboard, &self.nuplan, &self.notes]
            .iter()
            .all(|p| p.is_file())
    }
}

/// The scenario's number within its split: its seed minus the split's first seed (what the
/// report's example ids and the route ids use).
pub fn scenario_number(split: Split, e: &EpisodeStats) -> u64 {
    e.seed.wrapping_sub(split.seed_base())
}

/// `<split>_<family>_<number>`, the report's identifier of an evaluation scenario.
pub fn scenario_id(split: Split, e: &EpisodeStats) -> String {
    format!(
        "{}_{}_{}",
        split.name(),
        e.family.name(),
        scenario_number(split, e)
    )
}

/// The leaderboard results of a run.
pub fn leaderboard_results(run: &FieldRun) -> leaderboard::Results {
    let records = run
        .episodes
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let id = leaderboard::route_id(scenario_number(run.split, e));
            leaderboard::route_record(i, id, e, run.dt)
        })
        .collect();
    leaderboard::results(records)
}

/// The leaderboard results of a run as the file holds them: JSON indented by 4 spaces, as the
/// leaderboard's `json.dump(..., indent=4)` writes it.
pub fn leaderboard_json(run: &FieldRun) -> String {
    use serde::Serialize;
    let mut bytes = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut bytes, formatter);
    // Plain structs of strings, numbers and lists: serialising them into memory cannot fail,
    // and serde_json writes UTF-8.
    let _ = leaderboard_results(run).serialize(&mut ser);
    String::from_utf8(bytes).unwrap_or_default()
}

/// The nuPlan aggregator table of a run.
pub fn nuplan_table(run: &FieldRun) -> Vec<nuplan::Row> {
    let rows = run
        .episodes
        .iter()
        .map(|e| {
            nuplan::scenario_row(
                scenario_id(run.split, e),
                run.split.name().to_string(),
                e.family.name().to_string(),
                run.policy.name().to_string(),
                nuplan::metric_cells(e.nuplan_metrics().as_ref()),
            )
        })
        .collect();
    nuplan::table(rows)
}

/// The notes written beside the files.
pub fn notes_markdown(run: &FieldRun) -> String {
    let mut s = format!(
        "# {} on the {} split in the field's formats\n\n\
         - `{LEADERBOARD_FILE}`: CARLA Leaderboard 2.x results (statistics_manager.py's shape).\n\
         - `{NUPLAN_FILE}`: nuPlan's weighted-average metric aggregator table.\n\n\
         Where deltaplan's measurements differ from CARLA's and nuPlan's:\n\n",
        run.policy.name(),
        run.split.name()
    );
    for note in NOTES {
        s.push_str("- ");
        s.push_str(note);
        s.push('\n');
    }
    s
}

/// Writes the leaderboard file, the nuPlan table and the notes into `dir` (created if
/// missing), each atomically; the same episodes give the same bytes.
pub fn write_field_formats(dir: &Path, run: &FieldRun) -> Result<FieldFiles> {
    std::fs::create_dir_all(dir).map_err(|source| EvalError::Io {
        path: dir.display().to_string(),
        source,
    })?;
    let files = FieldFiles::in_dir(dir);
    write(&files.leaderboard, &leaderboard_json(run))?;
    write(&files.nuplan, &nuplan::to_csv(&nuplan_table(run)))?;
    write(&files.notes, &notes_markdown(run))?;
    Ok(files)
}

fn write(path: &Path, text: &str) -> Result<()> {
    deltaplan_stdx::fs::write_atomic(path, text.as_bytes()).map_err(|source| EvalError::Io {
        path: path.display().to_string(),
        source,
    })
}
