//! A SUMO world with real SUMO processes on generated networks.

mod common;

use deltaplan_sim::config::SimConfig;
use deltaplan_sim::events::EndReason;
use deltaplan_sumo::netgen::{generate, NetKind};
use deltaplan_sumo::world::{NetContext, SumoConfig, SumoWorld};
use std::sync::Arc;

#[test]
fn the_expert_drives_a_grid_route() {
    let Some(bins) = common::sumo_or_skip("the_expert_drives_a_grid_route") else {
        return;
    };
    let dir = common::scratch("expert_grid");
    let files = generate(&bins, &dir, NetKind::Grid, 3, 1500).unwrap();
    let net = Arc::new(NetContext::load(files).unwrap());
    let cfg = SimConfig::default();
    let mut w = SumoWorld::new(cfg, SumoConfig::default(), net, bins);
    for seed in 0..3 {
        w.reset(seed).unwrap();
        let mut plan = vec![0.0; cfg.action_dim()];
        let t0 = std::time::Instant::now();
        let mut end = EndReason::Running;
        let mut steps = 0;
        while end == EndReason::Running {
            w.expert_plan(&mut plan);
            end = w.step(&plan).unwrap().end;
            steps += 1;
        }
        eprintln!("seed {seed}: {end:?} after {steps} steps ({:.0} steps/s), route {:.0} m, rc {:.1}, neighbours {}, stats {:?}", steps as f64 / t0.elapsed().as_secs_f64(), w.route_len, w.stats.route_completion, w.neighbours.len(), w.stats);
    }
}
