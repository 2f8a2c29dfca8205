//! The report as files: report.json keeps its field names (other tools read them), its
//! numbers are the typed summaries', report.md shows them and counts how episodes ended.

use deltaplan_eval::report::{
    write_report, ActorStart, ConfigDifference, CurvePoint, Example, PolicyRun, ReportInput,
    SplitRun, WorldTable,
};
use deltaplan_eval::{DisplacementError, Metric, Policy};
use deltaplan_sim::{EndReason, EpisodeStats, Family};

fn episode(seed: u64, route_completion: f32, end: EndReason) -> EpisodeStats {
    EpisodeStats {
        family: if seed.is_multiple_of(2) {
            Family::Curvy
        } else {
            Family::Merge
        },
        seed,
        steps: 10,
        speed_sum: 100.0,
        route_completion,
        route_length: 100.0,
        collisions_vehicle: u32::from(end == EndReason::CollisionVehicle),
        offroad: u32::from(end == EndReason::OffRoad),
        end,
        ..Default::default()
    }
}

/// Four scenarios: the expert completes all; SFT collides on 1 and leaves the road on 3; the
/// refined planner collides on 1 only.
fn input() -> ReportInput {
    let done = EndReason::RouteCompleted;
    let expert: Vec<EpisodeStats> = (0..4).map(|s| episode(s, 100.0, done)).collect();
    let sft = vec![
        episode(0, 100.0, done),
        episode(1, 50.0, EndReason::CollisionVehicle),
        episode(2, 100.0, done),
        episode(3, 20.0, EndReason::OffRoad),
    ];
    let mut rl = sft.clone();
    rl[3] = episode(3, 100.0, done);
    let run = |episodes: Vec<EpisodeStats>, ade: f64| PolicyRun {
        episodes,
        open_loop: DisplacementError {
            ade,
            fde: 2.0 * ade,
        },
    };
    ReportInput {
        splits: vec![SplitRun {
            name: "eval".into(),
            expert: run(expert, 0.0),
            sft: run(sft, 0.5),
            rl: run(rl, 0.25),
        }],
        curve: vec![CurvePoint {
            env_steps: 512.0,
            driving_score: 70.0,
            episode_return: 3.0,
            failure_rate: 0.5,
        }],
        wall_seconds: 12.0,
        env_steps: 512,
        examples: Vec::new(),
        notes: vec!["a note".into()],
        timings: vec![("refine".into(), 3.5)],
        actor_start: None,
        config_differences: Vec::new(),
        other_worlds: Vec::new(),
    }
}

#[test]
fn report_json_has_its_fields_and_the_summaries_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let report = write_report(dir.path(), input()).unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap())
            .unwrap();
    let top: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        top,
        [
            "actor_start",
            "config_differences",
            "env_steps",
            "examples",
            "learning_curve",
            "notes",
            "other_worlds",
            "splits",
            "timings",
            "wall_seconds"
        ]
    );
    assert_eq!(v["timings"]["refine"], 3.5);
    let split = &v["splits"]["eval"];
    let mut keys: Vec<String> = split.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "expert",
            "failure_types",
            "family_differences",
            "flagged_families",
            "paired",
            "rl",
            "sft"
        ]
    );
    let mut expected: Vec<&str> = Metric::names();
    expected.extend(["ade", "ci", "episodes", "families", "fde"]);
    expected.sort();
    for p in Policy::ALL {
        let keys: Vec<&str> = split[p.name()]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, expected, "{}", p.name());
    }
    let paired: Vec<&str> = split["paired"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        paired,
        ["rl_minus_expert", "rl_minus_sft", "sft_minus_expert"]
    );

    // Hand-computed: SFT route completion (100 + 50 + 100 + 20) / 4 = 67.5; its driving score
    // (100 + 50 * 0.6 + 100 + 20) / 4 = 62.5; failures 2/4 -> 1/4.
    assert_eq!(split["sft"]["route_completion"], 67.5);
    let ds = split["sft"]["driving_score"].as_f64().unwrap();
    assert!((ds - 62.5).abs() < 1e-5, "{ds}");
    assert_eq!(split["sft"]["failure_rate"], 0.5);
    assert_eq!(split["rl"]["failure_rate"], 0.25);
    assert_eq!(split["rl"]["ade"], 0.25);
    assert_eq!(split["rl"]["fde"], 0.5);
    assert_eq!(split["rl"]["episodes"], 4);
    assert_eq!(
        split["paired"]["rl_minus_sft"]["failure_rate"]["mean"],
        -0.25
    );
    assert_eq!(
        split["paired"]["rl_minus_sft"]["route_completion"]["mean"],
        20.0
    );
    // Merge holds the odd seeds: SFT route completion (50 + 20) / 2.
    assert_eq!(split["sft"]["families"]["merge"]["route_completion"], 35.0);
    let ci = split["sft"]["ci"]["route_completion"].as_array().unwrap();
    assert!(ci[0].as_f64().unwrap() <= 67.5 && 67.5 <= ci[1].as_f64().unwrap());

    // The typed report holds the same numbers the file does.
    let s = &report.splits[0];
    assert_eq!(s.sft.summaries.overall[Metric::RouteCompletion].mean, 67.5);
    assert_eq!(
        s.paired(Policy::Sft, Policy::Rl).unwrap()[Metric::FailureRate].mean,
        -0.25
    );
    assert!(s.paired(Policy::Rl, Policy::Sft).is_none());
}

#[test]
fn report_md_and_figures_are_written_atomically() {
    let dir = tempfile::tempdir().unwrap();
    write_report(dir.path(), input()).unwrap();
    let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    assert!(
        md.contains("| Route completion (%) | 100.0 [100.0, 100.0] | 67.5 ["),
        "{md}"
    );
    assert!(
        md.contains("| Open-loop ADE (m) | 0.000 | 0.500 | 0.250 | |"),
        "{md}"
    );
    // How episodes ended, per policy, in the order of the end reasons.
    assert!(md.contains("| RouteCompleted | 4 | 2 | 3 |"), "{md}");
    assert!(md.contains("| CollisionVehicle | 0 | 1 | 1 |"), "{md}");
    assert!(md.contains("| OffRoad | 0 | 1 | 0 |"), "{md}");
    assert!(md.find("| RouteCompleted |") < md.find("| OffRoad |"));
    // Failure types per family, each cell expert / SFT / RL: merge holds seeds 1 and 3 (SFT
    // collides on 1, leaves the road on 3; RL collides on 1).
    assert!(
        md.contains(
            "| merge | 2 | 0 / 1 / 1 | 0 / 1 / 0 | 0 / 0 / 0 | 0 / 0 / 0 | 0 / 0 / 0 | 0 / 0 / 0 |"
        ),
        "{md}"
    );
    // No differences from the defaults: the empty-state line.
    assert!(
        md.contains("None: this run used the embedded defaults"),
        "{md}"
    );
    for f in [
        "report.json",
        "report.md",
        "figures/learning_curve.svg",
        "figures/learning_returns.svg",
        "figures/families_eval.svg",
        "figures/comfort_eval.svg",
        "figures/nuplan_eval.svg",
        "figures/family_differences_eval.svg",
    ] {
        assert!(dir.path().join(f).is_file(), "{f}");
    }
    let leftovers: Vec<_> = walk(dir.path())
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// The refined planner loses 2 points on every merge scenario and gains on curvy ones.
fn worse_on_merge() -> ReportInput {
    let mut input = input();
    let split = &mut input.splits[0];
    split.sft.episodes = split.expert.episodes.clone();
    split.rl.episodes = split.expert.episodes.clone();
    for e in &mut split.sft.episodes {
        if e.family == Family::Curvy {
            e.route_completion = 90.0;
        }
    }
    for e in &mut split.rl.episodes {
        if e.family == Family::Merge {
            e.route_completion = 98.0;
        }
    }
    input
}

#[test]
fn families_where_rl_is_worse_are_flagged_in_json_markdown_and_figure() {
    let dir = tempfile::tempdir().unwrap();
    let report = write_report(dir.path(), worse_on_merge()).unwrap();
    let s = &report.splits[0];
    let flagged: Vec<&str> = s.flagged_families().map(|d| d.family.name()).collect();
    assert_eq!(flagged, ["merge"]);
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap())
            .unwrap();
    let split = &v["splits"]["eval"];
    assert_eq!(split["flagged_families"], serde_json::json!(["merge"]));
    let merge = &split["family_differences"]["rl_minus_sft"]["merge"];
    assert_eq!(merge["driving_score"]["mean"], -2.0);
    assert_eq!(merge["worse_by_more_than_1"], true);
    assert_eq!(merge["interval_below_zero"], true);
    let curvy = &split["family_differences"]["rl_minus_sft"]["curvy"];
    assert_eq!(curvy["driving_score"]["mean"], 10.0);
    assert_eq!(curvy["worse_by_more_than_1"], false);
    assert_eq!(split["failure_types"]["sft"]["all"]["collision"], 0);
    assert_eq!(split["failure_types"]["sft"]["merge"]["episodes"], 2);
    let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    assert!(
        md.contains(
            "**Families where the refined planner is worse than SFT:** merge (-2.0 [-2.0, -2.0])."
        ),
        "{md}"
    );
    assert!(
        md.contains("| merge | 100.0 / 100.0 / 98.0 | -2.0 [-2.0, -2.0] | **worse by > 1 point, CI below 0** |"),
        "{md}"
    );
    assert!(
        md.contains("| curvy | 100.0 / 90.0 / 100.0 | +10.0 [+10.0, +10.0] |  |"),
        "{md}"
    );
    // The figure draws the flagged family's interval in red, the other in black.
    let svg =
        std::fs::read_to_string(dir.path().join("figures/family_differences_eval.svg")).unwrap();
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let intervals: Vec<&str> = doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("interval"))
        .map(|n| n.attribute("data-flagged").unwrap())
        .collect();
    assert_eq!(intervals, ["false", "true"], "curvy, merge");
    let threshold: f64 = doc
        .descendants()
        .find(|n| n.attribute("class") == Some("reference"))
        .and_then(|n| n.attribute("data-value"))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(threshold, -1.0);
}

/// The (x, y) pixels of a polyline's points.
fn points(node: roxmltree::Node) -> Vec<(f64, f64)> {
    node.attribute("points")
        .unwrap()
        .split_whitespace()
        .map(|p| {
            let (a, b) = p.split_once(',').unwrap();
            (a.parse().unwrap(), b.parse().unwrap())
        })
        .collect()
}

#[test]
fn learning_curve_draws_raw_and_smoothed_lines_reference_levels_and_the_actor_start() {
    let mut input = input();
    // The SFT level of the eval split is 62.5, the expert's 100: curve points at those values
    // must be drawn at the reference lines' heights.
    input.curve = [
        (512.0, 62.5),
        (1024.0, 100.0),
        (1536.0, 80.0),
        (2048.0, 90.0),
    ]
    .map(|(env_steps, driving_score)| CurvePoint {
        env_steps,
        driving_score,
        episode_return: 1.0,
        failure_rate: 0.0,
    })
    .to_vec();
    input.actor_start = Some(ActorStart {
        iteration: 2,
        env_steps: 1024.0,
    });
    let dir = tempfile::tempdir().unwrap();
    write_report(dir.path(), input).unwrap();
    let svg = std::fs::read_to_string(dir.path().join("figures/learning_curve.svg")).unwrap();
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let with_class = |c: &str| {
        doc.descendants()
            .filter(|n| n.attribute("class") == Some(c))
            .collect::<Vec<_>>()
    };
    let (raw, smooth) = (with_class("raw"), with_class("line"));
    assert_eq!(
        (raw.len(), smooth.len()),
        (1, 1),
        "one RL curve, raw and smoothed"
    );
    let raw = points(raw[0]);
    assert_eq!(raw.len(), 4);
    assert_eq!(points(smooth[0]).len(), 4);
    let references = with_class("reference");
    let level = |value: f64| {
        references
            .iter()
            .find(|n| {
                (n.attribute("data-value").unwrap().parse::<f64>().unwrap() - value).abs() < 1e-4
            })
            .map(|n| n.attribute("y1").unwrap().parse::<f64>().unwrap())
            .unwrap_or_else(|| panic!("no reference line at {value}"))
    };
    assert!(
        (level(62.5) - raw[0].1).abs() < 0.11,
        "SFT level at the height of 62.5"
    );
    assert!(
        (level(100.0) - raw[1].1).abs() < 0.11,
        "expert level at the height of 100"
    );
    // SFT and expert on the one split: two reference lines, labelled.
    assert_eq!(references.len(), 2);
    assert!(svg.contains("sft on eval: 62.5") && svg.contains("expert on eval: 100.0"));
    let markers = with_class("marker");
    assert_eq!(markers.len(), 1);
    let x: f64 = markers[0].attribute("x1").unwrap().parse().unwrap();
    assert!(
        (x - raw[1].0).abs() < 0.11,
        "the actor starts at 1024 environment steps"
    );
    assert!(svg.contains("actor starts (iteration 2"));
    assert!(svg.contains("environment steps") && svg.contains("driving score (points, 0-100)"));
}

#[test]
fn config_differences_and_examples_are_in_the_report() {
    let mut input = input();
    input.config_differences = vec![ConfigDifference {
        key: "refine.iterations".into(),
        default: "800".into(),
        value: "6".into(),
    }];
    input.examples = vec![Example {
        id: "eval_merge_4000002".into(),
        title: "merge".into(),
        images: vec![
            (
                "SFT".into(),
                "figures/episodes/eval_merge_4000002_sft.svg".into(),
            ),
            (
                "RL".into(),
                "figures/episodes/eval_merge_4000002_rl.svg".into(),
            ),
        ],
        filmstrip: Some("figures/episodes/eval_merge_4000002_filmstrip.svg".into()),
        motion: None,
        command: "deltaplan render --family merge --index 2 --policy sft --policy rl".into(),
    }];
    let dir = tempfile::tempdir().unwrap();
    write_report(dir.path(), input).unwrap();
    let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    assert!(
        md.contains(
            "| key | default | this run |\n|---|---|---|\n| `refine.iterations` | `800` | `6` |\n"
        ),
        "{md}"
    );
    assert!(!md.contains("None: this run used the embedded defaults"));
    assert!(md.contains("### `eval_merge_4000002`"), "{md}");
    assert!(md.contains("![filmstrip](figures/episodes/eval_merge_4000002_filmstrip.svg)"));
    assert!(md.contains("`figures/episodes/eval_merge_4000002_sft.svg`, `figures/episodes/eval_merge_4000002_rl.svg`, `figures/episodes/eval_merge_4000002_filmstrip.svg`"), "{md}");
    assert!(md.contains(
        "```sh\ndeltaplan render --family merge --index 2 --policy sft --policy rl\n```"
    ));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap())
            .unwrap();
    assert_eq!(v["config_differences"][0]["key"], "refine.iterations");
    assert_eq!(v["examples"][0]["id"], "eval_merge_4000002");
    assert_eq!(v["examples"][0]["files"].as_array().unwrap().len(), 3);
}

#[test]
fn other_worlds_tables_reach_the_markdown_and_the_json_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut with_sumo = input();
    with_sumo.other_worlds = vec![
        WorldTable {
            title: "rl, eval split, town01".into(),
            table: "| network | episodes |\n|---|---:|\n| town01 | 5 |\n".into(),
        },
        WorldTable {
            title: "sft, hard split, the held-out generated networks".into(),
            table: "| network | episodes |\n|---|---:|\n| grid-1000002 | 2 |\n".into(),
        },
    ];
    write_report(dir.path(), with_sumo).unwrap();
    let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    let sumo = md.find("## In SUMO").expect("a SUMO section");
    let first = md.find("### rl, eval split, town01\n\n| network").unwrap();
    let second = md.find("### sft, hard split").unwrap();
    assert!(sumo < first && first < second && md.contains("| town01 | 5 |"));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap())
            .unwrap();
    assert_eq!(
        v["other_worlds"][1]["title"],
        "sft, hard split, the held-out generated networks"
    );
    // Without SUMO evaluations, no section.
    let plain = tempfile::tempdir().unwrap();
    write_report(plain.path(), input()).unwrap();
    let md = std::fs::read_to_string(plain.path().join("report.md")).unwrap();
    assert!(!md.contains("## In SUMO"));
}
