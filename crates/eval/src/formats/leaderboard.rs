//! The CARLA Leaderboard 2.x results file, in the shape its `statistics_manager.py` writes
//! (`_checkpoint` with `global_record`, `progress` and per-route `records`; `entry_status`,
//! `eligible`, `sensors`, `values` and `labels`), computed as it computes it: per-route scores
//! rounded to 6 decimals, means over routes rounded to 6, sample standard deviations rounded
//! to 3, infractions per kilometre driven (route length x route completion, at least 1 m)
//! rounded to 3, the outside-route-lanes entry in kilometres rather than per kilometre, and
//! `values` as Python's `str` of those numbers.
//!
//! A route's numbers are deltaplan's own ([`Metric::value`]): its score is the driving score
//! `report.json` averages. What deltaplan measures differently or not at all is listed in
//! [`super::NOTES`] and in the README beside the file.

use deltaplan_sim::{EndReason, EpisodeStats};
use serde::{Deserialize, Serialize};

use super::pyfloat::{repr, round};
use crate::metric::Metric;

/// Decimals of lengths, durations, standard deviations and infraction rates.
pub const ROUND_DIGITS: usize = 3;
/// Decimals of scores.
pub const ROUND_DIGITS_SCORE: usize = 6;

/// The whole file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Results {
    #[serde(rename = "_checkpoint")]
    pub checkpoint: Checkpoint,
    /// `Finished` once every route ran (the leaderboard's `Started`, `Rejected`, `Crashed`,
    /// `Invalid` describe a submission's failures and never occur here).
    pub entry_status: String,
    /// The leaderboard's table: `Finished` is eligible.
    pub eligible: bool,
    /// Sensor types the agent declared; deltaplan's planners read a state vector, no sensors.
    pub sensors: Vec<String>,
    /// [`LABELS`]' numbers as Python strings.
    pub values: Vec<String>,
    pub labels: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub global_record: GlobalRecord,
    /// Routes done, routes in all.
    pub progress: [usize; 2],
    pub records: Vec<RouteRecord>,
}

/// One route (one deltaplan episode).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteRecord {
    pub index: usize,
    /// `RouteScenario_<N>_rep0`.
    pub route_id: String,
    /// `Perfect`, `Completed` (with infractions) or `Failed - <reason>`.
    pub status: String,
    pub num_infractions: usize,
    pub infractions: Infractions<Vec<String>>,
    pub scores: RouteScores,
    pub meta: RouteMeta,
}

/// The leaderboard's infraction keys, in its order: per route a list of messages, in the
/// global record a rate per kilometre driven.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Infractions<T> {
    pub collisions_layout: T,
    pub collisions_pedestrian: T,
    pub collisions_vehicle: T,
    pub red_light: T,
    pub stop_infraction: T,
    pub outside_route_lanes: T,
    pub min_speed_infractions: T,
    pub yield_emergency_vehicle_infractions: T,
    pub scenario_timeouts: T,
    pub route_dev: T,
    pub vehicle_blocked: T,
    pub route_timeout: T,
}

/// The infraction keys in the file's order.
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

/// The key whose global entry is kilometres, not a rate.
const OUTSIDE_ROUTE_LANES: &str = "outside_route_lanes";

impl<T> Infractions<T> {
    /// The values in the order of [`INFRACTION_KEYS`].
    pub fn values(&self) -> [&T; 12] {
        [
            &self.collisions_layout,
            &self.collisions_pedestrian,
            &self.collisions_vehicle,
            &self.red_light,
            &self.stop_infraction,
            &self.outside_route_lanes,
            &self.min_speed_infractions,
            &self.yield_emergency_vehicle_infractions,
            &self.scenario_timeouts,
            &self.route_dev,
            &self.vehicle_blocked,
            &self.route_timeout,
        ]
    }

    /// From values in the order of [`INFRACTION_KEYS`].
    pub fn from_values(values: [T; 12]) -> Infractions<T> {
        let [a, b, c, d, e, f, g, h, i, j, k, l] = values;
        Infractions {
            collisions_layout: a,
            collisions_pedestrian: b,
            collisions_vehicle: c,
            red_light: d,
            stop_infraction: e,
            outside_route_lanes: f,
            min_speed_infractions: g,
            yield_emergency_vehicle_infractions: h,
            scenario_timeouts: i,
            route_dev: j,
            vehicle_blocked: k,
            route_timeout: l,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteScores {
    /// Route completion, percent.
    pub score_route: f64,
    /// Infraction penalty, a factor in [0, 1].
    pub score_penalty: f64,
    /// Driving score: completion x penalty.
    pub score_composed: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteMeta {
    /// Metres.
    pub route_length: f64,
    /// Simulated seconds (steps x step length).
    pub duration_game: f64,
    /// Wall seconds in CARLA; 0 here (see [`super::NOTES`]): the file must be the same bytes
    /// on every rerun.
    pub duration_system: f64,
}

/// The aggregate over routes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobalRecord {
    /// -1, as the leaderboard writes it.
    pub index: i64,
    /// -1, as the leaderboard writes it.
    pub route_id: i64,
    /// The worst route status: `Perfect`, `Completed` or `Failed`.
    pub status: String,
    /// Per kilometre driven; `outside_route_lanes` in kilometres.
    pub infractions: Infractions<f64>,
    pub scores_mean: GlobalScores,
    pub scores_std_dev: GlobalScores,
    pub meta: GlobalMeta,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobalScores {
    pub score_composed: f64,
    pub score_route: f64,
    pub score_penalty: f64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobalMeta {
    /// Sum of the route lengths, metres.
    pub total_length: f64,
    pub duration_game: f64,
    pub duration_system: f64,
    /// `(route_id, index, status)` of every failed route.
    pub exceptions: Vec<(String, usize, String)>,
}

/// The labels of `values`, in the leaderboard's order.
pub const LABELS: [&str; 15] = [
    "Avg. driving score",
    "Avg. route completion",
    "Avg. infraction penalty",
    "Collisions with pedestrians",
    "Collisions with vehicles",
    "Collisions with layout",
    "Red lights infractions",
    "Stop sign infractions",
    "Off-road infractions",
    "Route deviations",
    "Route timeouts",
    "Agent blocked",
    "Yield emergency vehicles infractions",
    "Scenario timeouts",
    "Min speed infractions",
];

/// The leaderboard's route identifier for route number `n`.
pub fn route_id(n: u64) -> String {
    format!("RouteScenario_{n}_rep0")
}

/// One episode as a route record. `dt` is the simulator's step length (seconds).
pub fn route_record(index: usize, route_id: String, e: &EpisodeStats, dt: f32) -> RouteRecord {
    let repeat = |n: u32, message: &str| vec![message.to_string(); n as usize];
    let route_length = round(f64::from(e.route_length), ROUND_DIGITS);
    let mut outside_route_lanes = Vec::new();
    if e.outside_lane_distance > 0.0 {
        // The leaderboard's message (its global record reads the metres back from word 8), with
        // the percentage of the completed route, as the leaderboard's criterion states it.
        let metres = f64::from(e.outside_lane_distance);
        let completed = f64::from(e.route_length) * f64::from(e.route_completion) / 100.0;
        let percent = if completed > 0.0 {
            100.0 * metres / completed
        } else {
            0.0
        };
        outside_route_lanes.push(format!(
            "Agent went outside its route lanes for about {} meters ({}% of the completed route)",
            repr(round(metres, 3)),
            repr(round(percent, 2))
        ));
    }
    let infractions = Infractions {
        collisions_layout: repeat(
            e.collisions_static,
            "Agent collided against object with type=static.obstacle (deltaplan records no id or position)",
        ),
        collisions_pedestrian: Vec::new(),
        collisions_vehicle: repeat(
            e.collisions_vehicle,
            "Agent collided against object with type=vehicle (deltaplan records no id or position)",
        ),
        red_light: repeat(
            e.red_lights,
            "Agent ran a red light (deltaplan records no light id or position)",
        ),
        stop_infraction: Vec::new(),
        outside_route_lanes,
        min_speed_infractions: Vec::new(),
        yield_emergency_vehicle_infractions: Vec::new(),
        scenario_timeouts: Vec::new(),
        route_dev: repeat(
            e.offroad,
            "Agent left the drivable area (deltaplan's off-road check, standing in for a route deviation)",
        ),
        vehicle_blocked: repeat(
            u32::from(e.blocked),
            "Agent got blocked (no progress for sim.blocked_seconds)",
        ),
        route_timeout: repeat(u32::from(e.timeout), "Route timeout."),
    };
    let num_infractions = infractions.values().iter().map(|v| v.len()).sum();
    let score_route = Metric::RouteCompletion.value(e);
    let status = if score_route >= 100.0 {
        if num_infractions > 0 {
            "Completed".to_string()
        } else {
            "Perfect".to_string()
        }
    } else {
        match failure_message(e.end) {
            Some(reason) => format!("Failed - {reason}"),
            None => "Failed".to_string(),
        }
    };
    RouteRecord {
        index,
        route_id,
        status,
        num_infractions,
        infractions,
        scores: RouteScores {
            score_route: round(score_route, ROUND_DIGITS_SCORE),
            score_penalty: round(Metric::InfractionPenalty.value(e), ROUND_DIGITS_SCORE),
            score_composed: round(Metric::DrivingScore.value(e).max(0.0), ROUND_DIGITS_SCORE),
        },
        meta: RouteMeta {
            route_length,
            duration_game: round(f64::from(e.steps) * f64::from(dt), ROUND_DIGITS),
            duration_system: 0.0,
        },
    }
}

/// Why a route that did not reach its end stopped: the leaderboard's own messages where
/// deltaplan stops for the same cause (timeout, blocked, a broken agent, off the route),
/// deltaplan's where it stops and CARLA would drive on (collisions, red lights).
pub fn failure_message(end: EndReason) -> Option<&'static str> {
    match end {
        EndReason::TimeLimit => Some("Agent timed out"),
        EndReason::Blocked => Some("Agent got blocked"),
        EndReason::OffRoad => Some("Agent deviated from the route"),
        EndReason::NonFinite => Some("Agent crashed"),
        EndReason::CollisionVehicle => Some("Agent collided with a vehicle"),
        EndReason::CollisionStatic => Some("Agent collided with the layout"),
        EndReason::RedLight => Some("Agent ran a red light"),
        EndReason::RouteCompleted | EndReason::Running => None,
    }
}

/// The results file of `records` (every route of the evaluation, in order).
pub fn results(records: Vec<RouteRecord>) -> Results {
    let global = global_record(&records);
    let rates = &global.infractions;
    let values = [
        global.scores_mean.score_composed,
        global.scores_mean.score_route,
        global.scores_mean.score_penalty,
        rates.collisions_pedestrian,
        rates.collisions_vehicle,
        rates.collisions_layout,
        rates.red_light,
        rates.stop_infraction,
        rates.outside_route_lanes,
        rates.route_dev,
        rates.route_timeout,
        rates.vehicle_blocked,
        rates.yield_emergency_vehicle_infractions,
        rates.scenario_timeouts,
        rates.min_speed_infractions,
    ]
    .map(repr);
    let n = records.len();
    Results {
        checkpoint: Checkpoint {
            global_record: global,
            progress: [n, n],
            records,
        },
        entry_status: "Finished".into(),
        eligible: true,
        sensors: Vec::new(),
        values: values.to_vec(),
        labels: LABELS.map(String::from).to_vec(),
    }
}

/// The leaderboard's aggregate: means, standard deviations, totals, the worst status and
/// infractions per kilometre driven.
pub fn global_record(records: &[RouteRecord]) -> GlobalRecord {
    let n = records.len();
    let total = n as f64;
    let mut mean = GlobalScores::default();
    let mut meta = GlobalMeta::default();
    let mut status = "Perfect";
    for r in records {
        mean.score_route += r.scores.score_route / total;
        mean.score_penalty += r.scores.score_penalty / total;
        mean.score_composed += r.scores.score_composed / total;
        meta.total_length += r.meta.route_length;
        meta.duration_game += r.meta.duration_game;
        meta.duration_system += r.meta.duration_system;
        if r.status.contains("Failed") {
            meta.exceptions
                .push((r.route_id.clone(), r.index, r.status.clone()));
            status = "Failed";
        } else if status == "Perfect" && r.status != "Perfect" {
            status = "Completed";
        }
    }
    let scores_mean = GlobalScores {
        score_composed: round(mean.score_composed, ROUND_DIGITS_SCORE),
        score_route: round(mean.score_route, ROUND_DIGITS_SCORE),
        score_penalty: round(mean.score_penalty, ROUND_DIGITS_SCORE),
    };
    let std_dev = |score: fn(&RouteScores) -> f64, m: f64| {
        if n <= 1 {
            return 0.0;
        }
        let squares: f64 = records.iter().map(|r| (score(&r.scores) - m).powi(2)).sum();
        round((squares / (total - 1.0)).sqrt(), ROUND_DIGITS)
    };
    let scores_std_dev = GlobalScores {
        score_composed: std_dev(|s| s.score_composed, scores_mean.score_composed),
        score_route: std_dev(|s| s.score_route, scores_mean.score_route),
        score_penalty: std_dev(|s| s.score_penalty, scores_mean.score_penalty),
    };
    let km_driven = records
        .iter()
        .map(|r| r.meta.route_length / 1000.0 * r.scores.score_route / 100.0)
        .sum::<f64>()
        .max(0.001);
    let mut counts = [0.0f64; 12];
    for r in records {
        let lists = r.infractions.values();
        for ((count, key), messages) in counts.iter_mut().zip(INFRACTION_KEYS).zip(lists) {
            *count += if key == OUTSIDE_ROUTE_LANES {
                messages.first().map_or(0.0, |m| outside_km(m))
            } else {
                messages.len() as f64
            };
        }
    }
    let mut rates = [0.0f64; 12];
    for ((rate, key), count) in rates.iter_mut().zip(INFRACTION_KEYS).zip(counts) {
        let per_km = if key == OUTSIDE_ROUTE_LANES {
            count
        } else {
            count / km_driven
        };
        *rate = round(per_km, ROUND_DIGITS);
    }
    let infractions = Infractions::from_values(rates);
    GlobalRecord {
        index: -1,
        route_id: -1,
        status: status.into(),
        infractions,
        scores_mean,
        scores_std_dev,
        meta,
    }
}

/// The kilometres an outside-route-lanes message states (word 8 is the metres, as the
/// leaderboard reads it).
fn outside_km(message: &str) -> f64 {
    message
        .split(' ')
        .nth(8)
        .and_then(|w| w.parse::<f64>().ok())
        .map_or(0.0, |m| m / 1000.0)
}
