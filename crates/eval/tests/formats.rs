//! The field's formats: the CARLA Leaderboard 2.x results file and nuPlan's aggregator table,
//! checked against numbers computed by hand, against the leaderboard's own field set, and
//! against the summaries `report.json` is made of.

use deltaplan_eval::formats::leaderboard::{self, Results};
use deltaplan_eval::formats::nuplan::{self, METRIC_COLUMNS};
use deltaplan_eval::formats::{
    leaderboard_json, leaderboard_results, nuplan_table, write_field_formats, FieldRun,
};
use deltaplan_eval::{closed_loop, summarize, Driver, Metric, PlannerError, Policy};
use deltaplan_sim::{Difficulty, EndReason, EpisodeStats, Family, NuplanMetrics, SimConfig, Split};

const DT: f32 = 0.1;

/// Route A: 500 m completed, 10 m of it outside the route lane (2% of the route: penalty
/// 0.98), 250 steps. Route B: 1,000 m, half driven, one vehicle collision (penalty 0.6), 400
/// steps.
fn two_routes() -> [EpisodeStats; 2] {
    let base = Split::Eval.seed_base();
    [
        EpisodeStats {
            family: Family::Curvy,
            seed: base,
            steps: 250,
            end: EndReason::RouteCompleted,
            route_completion: 100.0,
            route_length: 500.0,
            outside_lane_distance: 10.0,
            ..Default::default()
        },
        EpisodeStats {
            family: Family::Merge,
            seed: base + 4_000_003,
            steps: 400,
            end: EndReason::CollisionVehicle,
            route_completion: 50.0,
            route_length: 1000.0,
            collisions_vehicle: 1,
            ..Default::default()
        },
    ]
}

fn run(episodes: &[EpisodeStats]) -> FieldRun<'_> {
    FieldRun {
        split: Split::Eval,
        policy: Policy::Sft,
        episodes,
        dt: DT,
    }
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}

#[test]
fn two_routes_give_the_hand_computed_leaderboard_file() {
    let episodes = two_routes();
    let r = leaderboard_results(&run(&episodes));
    let [a, b] = [&r.checkpoint.records[0], &r.checkpoint.records[1]];

    assert_eq!(a.route_id, "RouteScenario_0_rep0");
    assert_eq!(b.route_id, "RouteScenario_4000003_rep0");
    assert_eq!((a.index, b.index), (0, 1));
    // A reached the end with an infraction: Completed, not Perfect.
    assert_eq!(a.status, "Completed");
    assert_eq!(a.num_infractions, 1);
    assert_eq!(
        a.infractions.outside_route_lanes,
        ["Agent went outside its route lanes for about 10.0 meters (2.0% of the completed route)"]
    );
    assert_eq!(b.status, "Failed - Agent collided with a vehicle");
    assert_eq!(b.num_infractions, 1);
    assert_eq!(b.infractions.collisions_vehicle.len(), 1);
    assert!(b.infractions.red_light.is_empty() && b.infractions.route_timeout.is_empty());
    // Scores: single-precision deltaplan numbers, rounded to 6 decimals.
    assert_eq!(a.scores.score_route, 100.0);
    assert!(close(a.scores.score_penalty, 0.98, 1e-6));
    assert!(close(a.scores.score_composed, 98.0, 1e-5));
    assert_eq!(b.scores.score_route, 50.0);
    assert!(close(b.scores.score_penalty, 0.6, 1e-6));
    assert!(close(b.scores.score_composed, 30.0, 1e-5));
    // Meta: metres and simulated seconds, rounded to 3 decimals; no wall time.
    assert_eq!(
        (
            a.meta.route_length,
            a.meta.duration_game,
            a.meta.duration_system
        ),
        (500.0, 25.0, 0.0)
    );
    assert_eq!((b.meta.route_length, b.meta.duration_game), (1000.0, 40.0));

    let g = &r.checkpoint.global_record;
    assert_eq!((g.index, g.route_id), (-1, -1));
    assert_eq!(g.status, "Failed");
    assert_eq!(g.scores_mean.score_route, 75.0);
    assert!(close(g.scores_mean.score_penalty, 0.79, 1e-6));
    assert!(close(g.scores_mean.score_composed, 64.0, 1e-5));
    // Sample standard deviations of two values: |x - y| / sqrt(2), rounded to 3.
    assert_eq!(g.scores_std_dev.score_route, 35.355);
    assert_eq!(g.scores_std_dev.score_composed, 48.083);
    assert_eq!(g.scores_std_dev.score_penalty, 0.269);
    // Kilometres driven: 0.5 km x 100% + 1 km x 50% = 1 km.
    assert_eq!(g.infractions.collisions_vehicle, 1.0);
    assert_eq!(g.infractions.red_light, 0.0);
    // Outside the route lanes: kilometres, not per kilometre.
    assert_eq!(g.infractions.outside_route_lanes, 0.01);
    assert_eq!(g.meta.total_length, 1500.0);
    assert_eq!(g.meta.duration_game, 65.0);
    assert_eq!(
        g.meta.exceptions,
        [(
            "RouteScenario_4000003_rep0".to_string(),
            1,
            "Failed - Agent collided with a vehicle".to_string()
        )]
    );

    assert_eq!(r.checkpoint.progress, [2, 2]);
    assert_eq!((r.entry_status.as_str(), r.eligible), ("Finished", true));
    assert_eq!(r.values.len(), 15);
    assert_eq!(r.labels.len(), 15);
    assert_eq!(r.labels[0], "Avg. driving score");
    assert_eq!(r.values[1], "75.0");
    assert_eq!(r.labels[4], "Collisions with vehicles");
    assert_eq!(r.values[4], "1.0");
    assert_eq!(r.labels[8], "Off-road infractions");
    assert_eq!(r.values[8], "0.01");
    assert_eq!(r.values[3], "0.0");
    let avg: f64 = r.values[0].parse().unwrap();
    assert!(close(avg, 64.0, 1e-5), "{}", r.values[0]);
}

#[test]
fn statuses_and_rates_of_every_ending() {
    let base = EpisodeStats {
        seed: Split::Eval.seed_base(),
        route_length: 200.0,
        route_completion: 40.0,
        steps: 10,
        ..Default::default()
    };
    let cases = [
        (
            EpisodeStats {
                end: EndReason::TimeLimit,
                timeout: true,
                ..base
            },
            "Failed - Agent timed out",
        ),
        (
            EpisodeStats {
                end: EndReason::Blocked,
                blocked: true,
                ..base
            },
            "Failed - Agent got blocked",
        ),
        (
            EpisodeStats {
                end: EndReason::OffRoad,
                offroad: 1,
                ..base
            },
            "Failed - Agent deviated from the route",
        ),
        (
            EpisodeStats {
                end: EndReason::RedLight,
                red_lights: 1,
                ..base
            },
            "Failed - Agent ran a red light",
        ),
        (
            EpisodeStats {
                end: EndReason::CollisionStatic,
                collisions_static: 1,
                ..base
            },
            "Failed - Agent collided with the layout",
        ),
        (
            EpisodeStats {
                end: EndReason::NonFinite,
                ..base
            },
            "Failed - Agent crashed",
        ),
        (
            EpisodeStats {
                end: EndReason::RouteCompleted,
                route_completion: 100.0,
                ..base
            },
            "Perfect",
        ),
    ];
    let records: Vec<_> = cases
        .iter()
        .enumerate()
        .map(|(i, (e, _))| leaderboard::route_record(i, leaderboard::route_id(i as u64), e, DT))
        .collect();
    for (r, (_, want)) in records.iter().zip(&cases) {
        assert_eq!(r.status, *want);
    }
    assert_eq!(records[0].infractions.route_timeout, ["Route timeout."]);
    assert_eq!(records[1].infractions.vehicle_blocked.len(), 1);
    assert_eq!(records[2].infractions.route_dev.len(), 1);
    assert_eq!(records[3].infractions.red_light.len(), 1);
    assert_eq!(records[4].infractions.collisions_layout.len(), 1);
    assert_eq!(records[5].num_infractions, 0);
    // Driven: 6 x 0.2 km x 40% + 0.2 km = 0.68 km; one of each infraction.
    let g = leaderboard::global_record(&records);
    let per_km = (1.0 / 0.68f64 * 1000.0).round() / 1000.0;
    for rate in [
        g.infractions.route_timeout,
        g.infractions.vehicle_blocked,
        g.infractions.route_dev,
        g.infractions.red_light,
        g.infractions.collisions_layout,
    ] {
        assert_eq!(rate, per_km);
    }
    assert_eq!(per_km, 1.471);
    assert_eq!(g.meta.exceptions.len(), 6);
    // Nothing driven at all: the leaderboard's floor of 1 m.
    let standing = EpisodeStats {
        route_completion: 0.0,
        collisions_vehicle: 1,
        end: EndReason::CollisionVehicle,
        ..base
    };
    let g = leaderboard::global_record(&[leaderboard::route_record(
        0,
        leaderboard::route_id(0),
        &standing,
        DT,
    )]);
    assert_eq!(g.infractions.collisions_vehicle, 1000.0);
    assert_eq!(g.scores_std_dev.score_composed, 0.0);
}

fn cells(m: NuplanMetrics) -> [Option<f64>; 8] {
    nuplan::metric_cells(Some(&m))
}

#[test]
fn nuplan_table_has_the_hand_computed_rows() {
    let perfect = NuplanMetrics {
        no_ego_at_fault_collisions: 1.0,
        drivable_area_compliance: 1.0,
        driving_direction_compliance: 1.0,
        ego_is_making_progress: 1.0,
        ego_progress_along_expert_route: 1.0,
        time_to_collision_within_bound: 1.0,
        speed_limit_compliance: 1.0,
        ego_is_comfortable: 1.0,
    };
    // (5 x 0.5 + 5 x 1 + 4 x 0.5 + 2 x 0) / 16 = 9.5 / 16.
    let slow = NuplanMetrics {
        ego_progress_along_expert_route: 0.5,
        speed_limit_compliance: 0.5,
        ego_is_comfortable: 0.0,
        ..perfect
    };
    // A static collision halves the score.
    let bumped = NuplanMetrics {
        no_ego_at_fault_collisions: 0.5,
        ..perfect
    };
    let row = |name: &str, family: &str, m: [Option<f64>; 8]| {
        nuplan::scenario_row(name.into(), "eval".into(), family.into(), "sft".into(), m)
    };
    let rows = nuplan::table(vec![
        row("eval_curvy_0", "curvy", cells(slow)),
        row("eval_merge_4000003", "merge", [None; 8]),
        row("eval_curvy_1", "curvy", cells(bumped)),
    ]);
    assert_eq!(rows.len(), 3 + 2 + 1);
    assert_eq!(rows[0].score, 0.59375);
    assert_eq!(rows[1].score, 0.0, "no metric: nuPlan scores 0");
    assert_eq!(rows[2].score, 0.5);
    let csv = nuplan::to_csv(&rows);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        format!(
            "scenario,log_name,scenario_type,num_scenarios,planner_name,aggregator_type,{},score",
            METRIC_COLUMNS.join(",")
        )
    );
    // Columns after aggregator_type: drivable, direction, comfortable, making progress,
    // progress, at fault, speed limit, TTC, score.
    assert_eq!(
        lines[1],
        "eval_curvy_0,eval,curvy,,sft,weighted_average,1.0,1.0,0.0,1.0,0.5,1.0,0.5,1.0,0.59375"
    );
    assert_eq!(
        lines[2],
        "eval_merge_4000003,eval,merge,,sft,weighted_average,,,,,,,,,0.0"
    );
    // Type rows: sums of the metric columns (as nuPlan's aggregator writes them), mean score.
    assert_eq!(
        lines[4],
        "curvy,,curvy,2,sft,weighted_average,2.0,2.0,1.0,2.0,1.5,1.5,1.5,2.0,0.546875"
    );
    assert_eq!(lines[5], "merge,,merge,1,sft,weighted_average,,,,,,,,,0.0");
    // Final row: column sums over all 3 scenarios / 3, score = (0.546875 x 2 + 0 x 1) / 3.
    let last: Vec<&str> = lines[6].split(',').collect();
    assert_eq!(
        &last[..6],
        [
            "final_score",
            "",
            "final_score",
            "3",
            "sft",
            "weighted_average"
        ]
    );
    let num = |k: usize| last[k].parse::<f64>().unwrap();
    assert!(close(num(6), 2.0 / 3.0, 1e-15));
    assert!(close(num(10), 0.5, 1e-15));
    assert!(close(num(11), 0.5, 1e-15));
    assert!(close(num(14), 0.546875 * 2.0 / 3.0, 1e-15));
    assert_eq!(lines.len(), 7);
}

#[test]
fn scenario_scores_are_the_episode_nuplan_scores() {
    // The episodes of the simulator's own hand-computed nuPlan cases, and more.
    let clean = EpisodeStats {
        end: EndReason::RouteCompleted,
        route_completion: 100.0,
        steps: 10,
        ..Default::default()
    };
    let episodes = [
        clean,
        EpisodeStats {
            route_completion: 80.0,
            comfort_steps: [1, 0, 0, 0, 0, 0],
            overspeed_sum: 11.15,
            ..clean
        },
        EpisodeStats {
            ttc_violation_steps: 2,
            wrong_way_distance: 3.0,
            ..clean
        },
        EpisodeStats {
            collisions_static: 1,
            ..clean
        },
        EpisodeStats {
            collisions_vehicle: 1,
            ..clean
        },
        EpisodeStats {
            route_completion: 19.0,
            ..clean
        },
        EpisodeStats {
            end: EndReason::NonFinite,
            ..clean
        },
    ];
    let want = [100.0, 68.75, 0.5 * 100.0 * 11.0 / 16.0, 50.0, 0.0, 0.0, 0.0];
    for (e, want) in episodes.iter().zip(want) {
        let score = nuplan::scenario_score(&nuplan::metric_cells(e.nuplan_metrics().as_ref()));
        assert!(close(100.0 * score, want, 1e-3), "{e:?}: {score}");
        assert!(close(100.0 * score, f64::from(e.nuplan_score()), 1e-4));
    }
}

/// Drives straight ahead at 8 m/s whatever the road does: collides, leaves curves, runs lights.
fn straight(_obs: &[f32], plans: &mut [f32]) -> Result<(), PlannerError> {
    let h = SimConfig::default().horizon;
    for plan in plans.chunks_mut(2 * h) {
        for (k, p) in plan.chunks_mut(2).enumerate() {
            p[0] = 8.0 * 0.2 * (k + 1) as f32;
            p[1] = 0.0;
        }
    }
    Ok(())
}

fn nan(_obs: &[f32], plans: &mut [f32]) -> Result<(), PlannerError> {
    plans.fill(f32::NAN);
    Ok(())
}

fn evaluated() -> Vec<(&'static str, Vec<EpisodeStats>)> {
    let sim = SimConfig::default();
    let specs = Split::Eval.suite(&Family::ALL, 3, Difficulty::default());
    let mut straight = straight;
    let mut nan = nan;
    vec![
        (
            "expert",
            closed_loop(sim, &specs, &mut Driver::Expert).unwrap(),
        ),
        (
            "straight",
            closed_loop(sim, &specs, &mut Driver::Planner(&mut straight)).unwrap(),
        ),
        (
            "nan",
            closed_loop(sim, &specs, &mut Driver::Planner(&mut nan)).unwrap(),
        ),
    ]
}

#[test]
fn averages_agree_with_the_summaries_report_json_shows() {
    for (name, episodes) in evaluated() {
        let s = summarize(&episodes).overall;
        let r = leaderboard_results(&run(&episodes));
        let g = &r.checkpoint.global_record;
        // Rounded to 6 decimals per route and once more for the mean: within 1e-6.
        let ds = s[Metric::DrivingScore].mean;
        assert!(
            close(g.scores_mean.score_composed, ds, 1e-6),
            "{name}: {} vs {ds}",
            g.scores_mean.score_composed
        );
        let rc = s[Metric::RouteCompletion].mean;
        assert!(close(g.scores_mean.score_route, rc, 1e-6), "{name}");
        let p = s[Metric::InfractionPenalty].mean;
        assert!(close(g.scores_mean.score_penalty, p, 1e-6), "{name}");
        assert_eq!(
            r.values[0].parse::<f64>().unwrap(),
            g.scores_mean.score_composed
        );
        // Failed routes are exactly the episodes that did not complete their route.
        let failed = episodes
            .iter()
            .filter(|e| e.route_completion < 100.0)
            .count();
        assert_eq!(g.meta.exceptions.len(), failed, "{name}");
        // The table's final score is report.json's nuplan_score / 100.
        let table = nuplan_table(&run(&episodes));
        let last = table.last().unwrap();
        assert_eq!(last.scenario, "final_score");
        assert_eq!(last.num_scenarios, Some(episodes.len()));
        let nuplan = s[Metric::NuplanScore].mean;
        assert!(
            close(100.0 * last.score, nuplan, 1e-4),
            "{name}: {} vs {nuplan}",
            last.score
        );
    }
}

#[test]
fn the_files_are_deterministic_and_atomic() {
    let all = evaluated();
    let episodes = &all[1].1;
    let dir = tempfile::tempdir().unwrap();
    let one = write_field_formats(&dir.path().join("a"), &run(episodes)).unwrap();
    let two = write_field_formats(&dir.path().join("b"), &run(episodes)).unwrap();
    for (x, y) in [
        (&one.leaderboard, &two.leaderboard),
        (&one.nuplan, &two.nuplan),
        (&one.notes, &two.notes),
    ] {
        assert_eq!(std::fs::read(x).unwrap(), std::fs::read(y).unwrap());
    }
    let text = std::fs::read_to_string(&one.leaderboard).unwrap();
    assert_eq!(text, leaderboard_json(&run(episodes)));
    // Indented by 4 spaces, as the leaderboard's json.dump(indent=4).
    assert!(text.starts_with("{\n    \"_checkpoint\": {\n        \"global_record\""));
    let names: Vec<String> = std::fs::read_dir(dir.path().join("a"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 3, "no temporary left: {names:?}");
    let notes = std::fs::read_to_string(&one.notes).unwrap();
    assert!(notes.contains("min_speed_infractions") && notes.contains("duration_system = 0"));
}

/// The leaderboard's own field set, written from `statistics_manager.py` (leaderboard 2.x:
/// `RouteRecord`, `GlobalRecord`, `Checkpoint`, `Results`), independent of the writer's types:
/// a field the leaderboard does not have, or one it has and the file lacks, fails the parse.
mod carla {
    use serde::Deserialize;
    use std::collections::BTreeMap;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Results {
        pub _checkpoint: Checkpoint,
        pub entry_status: String,
        pub eligible: bool,
        pub sensors: Vec<String>,
        pub values: Vec<String>,
        pub labels: Vec<String>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Checkpoint {
        pub global_record: GlobalRecord,
        pub progress: Vec<usize>,
        pub records: Vec<RouteRecord>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct RouteRecord {
        pub index: i64,
        pub route_id: String,
        pub status: String,
        pub num_infractions: usize,
        pub infractions: BTreeMap<String, Vec<String>>,
        pub scores: Scores,
        pub meta: RouteMeta,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Scores {
        pub score_route: f64,
        pub score_penalty: f64,
        pub score_composed: f64,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct RouteMeta {
        pub route_length: f64,
        pub duration_game: f64,
        pub duration_system: f64,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct GlobalRecord {
        pub index: i64,
        pub route_id: i64,
        pub status: String,
        pub infractions: BTreeMap<String, f64>,
        pub scores_mean: Scores,
        pub scores_std_dev: Scores,
        pub meta: GlobalMeta,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct GlobalMeta {
        pub total_length: f64,
        pub duration_game: f64,
        pub duration_system: f64,
        pub exceptions: Vec<(String, i64, String)>,
    }

    /// `PENALTY_NAME_DICT`'s values and `route_timeout`.
    pub const INFRACTION_KEYS: [&str; 12] = [
        "collisions_layout",
        "collisions_pedestrian",
        "collisions_vehicle",
        "red_light",
        "stop_infraction",
        "outside_route_lanes",
        "min_speed_infractions",
        "yield_emergency_vehicle_infractions",
        "scenario_timeouts",
        "route_dev",
        "vehicle_blocked",
        "route_timeout",
    ];
}

#[test]
fn the_file_parses_as_the_leaderboards_own_field_set() {
    for (name, episodes) in evaluated() {
        let text = leaderboard_json(&run(&episodes));
        let r: carla::Results =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut keys: Vec<&str> = carla::INFRACTION_KEYS.to_vec();
        keys.sort_unstable();
        let g = &r._checkpoint.global_record;
        assert_eq!(
            g.infractions.keys().map(String::as_str).collect::<Vec<_>>(),
            keys
        );
        assert_eq!(r._checkpoint.progress, [episodes.len(), episodes.len()]);
        assert_eq!(r._checkpoint.records.len(), episodes.len());
        for (k, rec) in r._checkpoint.records.iter().enumerate() {
            assert_eq!(rec.index, k as i64);
            assert_eq!(
                rec.infractions
                    .keys()
                    .map(String::as_str)
                    .collect::<Vec<_>>(),
                keys
            );
            let n: usize = rec.infractions.values().map(Vec::len).sum();
            assert_eq!(rec.num_infractions, n);
            let perfect = rec.status == "Perfect";
            assert!(
                perfect && n == 0
                    || rec.status == "Completed" && n > 0
                    || rec.status.starts_with("Failed"),
                "{name}: {} with {n} infractions",
                rec.status
            );
            assert!(rec.route_id.starts_with("RouteScenario_") && rec.route_id.ends_with("_rep0"));
            // A non-finite first plan ends the episode before a step is taken.
            assert!(rec.meta.route_length > 0.0 && rec.meta.duration_game >= 0.0);
            assert_eq!(rec.meta.duration_system, 0.0);
            let composed = rec.scores.score_route * rec.scores.score_penalty;
            assert!(close(rec.scores.score_composed, composed, 1e-3), "{name}");
        }
        assert_eq!((g.index, g.route_id), (-1, -1));
        let failed: Vec<_> = r
            ._checkpoint
            .records
            .iter()
            .filter(|r| r.status.starts_with("Failed"))
            .collect();
        assert_eq!(g.status == "Failed", !failed.is_empty(), "{name}");
        assert_eq!(g.meta.exceptions.len(), failed.len());
        for ((id, index, status), rec) in g.meta.exceptions.iter().zip(&failed) {
            assert_eq!(
                (id, *index, status),
                (&rec.route_id, rec.index, &rec.status)
            );
        }
        let total: f64 = r
            ._checkpoint
            .records
            .iter()
            .map(|r| r.meta.route_length)
            .sum();
        assert_eq!(g.meta.total_length, total);
        assert_eq!(g.meta.duration_system, 0.0);
        assert!(g.meta.duration_game >= 0.0);
        let sd = &g.scores_std_dev;
        assert!(sd.score_composed >= 0.0 && sd.score_route >= 0.0 && sd.score_penalty >= 0.0);
        // The leaderboard's `values` are `str` of the global numbers, in its label order.
        assert_eq!(r.labels, leaderboard::LABELS);
        let v = |k: usize| r.values[k].parse::<f64>().unwrap();
        assert_eq!(v(0), g.scores_mean.score_composed);
        assert_eq!(v(1), g.scores_mean.score_route);
        assert_eq!(v(2), g.scores_mean.score_penalty);
        for (k, key) in [
            (3, "collisions_pedestrian"),
            (4, "collisions_vehicle"),
            (5, "collisions_layout"),
            (6, "red_light"),
            (7, "stop_infraction"),
            (8, "outside_route_lanes"),
            (9, "route_dev"),
            (10, "route_timeout"),
            (11, "vehicle_blocked"),
            (12, "yield_emergency_vehicle_infractions"),
            (13, "scenario_timeouts"),
            (14, "min_speed_infractions"),
        ] {
            assert_eq!(v(k), g.infractions[key], "{name}: {key}");
        }
        assert_eq!(r.entry_status, "Finished");
        assert!(r.eligible && r.sensors.is_empty());
        // Round trip through the writer's own types too.
        let typed: Results = serde_json::from_str(&text).unwrap();
        assert_eq!(typed, leaderboard_results(&run(&episodes)));
    }
    // The straight-driving planner fails in more than one way; the file says which.
    let all = evaluated();
    let text = leaderboard_json(&run(&all[1].1));
    assert!(text.contains("Failed - "), "{text}");
    let nan_text = leaderboard_json(&run(&all[2].1));
    assert!(nan_text.contains("Failed - Agent crashed"));
}
