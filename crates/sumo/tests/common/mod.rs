//! What the SUMO tests share: SUMO's binaries, or a printed reason to skip (a failure when
//! `DELTAPLAN_REQUIRE_SUMO=1`, as CI sets it), and a scratch directory for networks.

#![allow(dead_code)]

use deltaplan_sumo::locate::SumoBinaries;
use std::path::PathBuf;

/// SUMO's binaries; `None` (the test skips, saying why) when SUMO is not installed, unless
/// `DELTAPLAN_REQUIRE_SUMO=1`, where its absence fails the test.
pub fn sumo_or_skip(test: &str) -> Option<SumoBinaries> {
    match SumoBinaries::locate_default() {
        Ok(b) => Some(b),
        Err(e) if std::env::var("DELTAPLAN_REQUIRE_SUMO").as_deref() == Ok("1") => {
            panic!("{test}: DELTAPLAN_REQUIRE_SUMO=1 but {e}")
        }
        Err(e) => {
            eprintln!("SKIPPED {test}: {e}");
            None
        }
    }
}

/// A scratch directory under the target directory, emptied.
pub fn scratch(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(|p| p.parent())
        .expect("target/<profile>/deps")
        .join("sumo-tests")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

/// Drives episode `seed` of `w` with its expert to the end, calling `after_step` after every
/// step with the step's end (`Running` until the last); returns how the episode ended.
pub fn expert_episode(
    w: &mut deltaplan_sumo::SumoWorld,
    seed: u64,
    mut after_step: impl FnMut(&mut deltaplan_sumo::SumoWorld, deltaplan_sim::events::EndReason),
) -> deltaplan_sim::events::EndReason {
    use deltaplan_sim::events::EndReason;
    w.reset(seed).unwrap();
    let mut plan = vec![0.0; w.cfg.action_dim()];
    let mut end = EndReason::Running;
    while end == EndReason::Running {
        w.expert_plan(&mut plan);
        end = w.step(&plan).unwrap().end;
        after_step(w, end);
    }
    end
}
