//! `deltaplan evaluate --world sumo` with real SUMO processes: the expert's evaluation file
//! holds one record per episode (`eval.per_family` x 5), every one driven. Skips with a printed
//! reason without SUMO, unless `DELTAPLAN_REQUIRE_SUMO=1`.

mod common;

use common::{bin, text, tmp};
use deltaplan_sim::EpisodeStats;

#[test]
fn evaluate_world_sumo_writes_one_record_per_episode() {
    if let Err(e) = deltaplan_sumo::locate::SumoBinaries::locate_default() {
        if std::env::var("DELTAPLAN_REQUIRE_SUMO").as_deref() == Ok("1") {
            panic!("DELTAPLAN_REQUIRE_SUMO=1 but {e}");
        }
        eprintln!("SKIPPED evaluate_world_sumo_writes_one_record_per_episode: {e}");
        return;
    }
    let out = tmp("sumo", "evaluate");
    let o = bin()
        .args(["evaluate", "--world", "sumo", "--policy", "expert", "--out"])
        .arg(&out)
        .args(["--set", "eval.per_family=1"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let path = out.join("eval/sumo_eval_expert.json");
    let records: Vec<EpisodeStats> =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(records.len(), 5);
    for r in &records {
        assert!(r.steps > 0 && r.route_length > 200.0, "{r:?}");
    }
    // Seeds from the evaluation split, one per episode.
    assert!(records
        .iter()
        .all(|r| deltaplan_sim::Split::Eval.contains(r.seed)));
    let _ = std::fs::remove_dir_all(&out);
}
