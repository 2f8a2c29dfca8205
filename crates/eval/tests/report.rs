//! The report as files: report.json keeps its field names (other tools read them), its
//! numbers are the typed summaries', report.md shows them and counts how episodes ended.

use deltaplan_eval::report::{write_report, CurvePoint, PolicyRun, ReportInput, SplitRun};
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
            "env_steps",
            "learning_curve",
            "notes",
            "splits",
            "timings",
            "wall_seconds"
        ]
    );
    assert_eq!(v["timings"]["refine"], 3.5);
    let split = &v["splits"]["eval"];
    let mut keys: Vec<String> = split.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, ["expert", "paired", "rl", "sft"]);
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
    for f in [
        "report.json",
        "report.md",
        "figures/learning_curve.svg",
        "figures/learning_returns.svg",
        "figures/families_eval.svg",
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
