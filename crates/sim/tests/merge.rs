//! What a merge shows the planner and what it costs in the reward, against values computed by
//! hand from a merge scenario whose traffic the test places: the observation's `merge` slice
//! and the agents' acceleration feature, and the time-to-collision factor's view of merging
//! traffic.

use deltaplan_sim::obs::{slice, AGENT_FEATURES, K_AGENTS};
use deltaplan_sim::{observe, Difficulty, Family, ScenarioSpec, SimConfig, World, OBS_DIM};

fn merge_world() -> World {
    let mut w = World::new(SimConfig::default());
    w.reset(ScenarioSpec {
        family: Family::Merge,
        seed: 5,
        difficulty: Difficulty::default(),
    });
    w
}

fn observation(w: &World) -> Vec<f32> {
    let mut out = vec![0.0; OBS_DIM];
    observe(w, &mut out);
    out
}

#[test]
fn the_merge_slice_maps_the_main_roads_nearest_cars_onto_the_route() {
    let mut w = merge_world();
    let m = w.merge.expect("a merge scenario links its main road");
    let half_ego = 0.5 * w.cfg.vehicle.length;
    // Keep two cars of the main road and move them: one 12 m (bumper to bumper) ahead of the
    // ego once mapped onto the route, one 30 m behind; a third 25 m ahead is farther than the
    // first and must not be the one described.
    let main: Vec<usize> = (0..w.agents.len())
        .filter(|&i| w.agents[i].path == m.main_path)
        .collect();
    assert!(main.len() >= 3, "the merge scenario has main-road traffic");
    for a in w.agents.iter_mut() {
        a.active = false;
    }
    // Moves agent `i` so that, mapped onto the route, its bumper is `gap` metres ahead of the
    // ego's (negative: behind), driving `dv` m/s faster than the ego.
    let place = |w: &mut World, i: usize, gap: f32, dv: f32| {
        let half = half_ego + 0.5 * w.agents[i].length;
        let centre = w.route_s + gap.signum() * (gap.abs() + half);
        let v = w.ego.v + dv;
        let a = &mut w.agents[i];
        a.active = true;
        a.s = centre - m.s_route_merge + m.s_main_merge;
        a.v = v;
    };
    let s = w.route_s;
    let (ahead, behind, far) = (main[0], main[1], main[2]);
    place(&mut w, ahead, 12.0, 3.0);
    place(&mut w, behind, -30.0, -2.0);
    place(&mut w, far, 25.0, 0.0);
    let (base, len) = slice("merge").unwrap();
    assert_eq!(len, 6);
    let out = observation(&w);
    let close = |a: f32, b: f32| (a - b).abs() < 1e-4;
    let to_merge = m.s_route_merge - (s + half_ego);
    let expected = [
        (to_merge / 100.0).min(1.6),
        1.0,
        12.0 / 50.0,
        0.3,
        30.0 / 50.0,
        -0.2,
    ];
    for (k, e) in expected.into_iter().enumerate() {
        assert!(
            close(out[base + k], e),
            "merge[{k}] = {}, expected {e}",
            out[base + k]
        );
    }

    // A main-road car overlapping the ego (12 m mapped ahead of its centre, longer than the two
    // half lengths) is ahead with a negative gap.
    for a in w.agents.iter_mut() {
        a.active = false;
    }
    let centre_ahead = 1.0;
    {
        let a = &mut w.agents[ahead];
        a.active = true;
        a.s = s + centre_ahead - m.s_route_merge + m.s_main_merge;
    }
    let overlap = centre_ahead - half_ego - 0.5 * w.agents[ahead].length;
    let out = observation(&w);
    assert!(close(out[base + 2], overlap / 50.0), "{}", out[base + 2]);
    assert_eq!(out[base + 4], 1.6, "nothing behind");

    // Past the merge point by more than 5 m: no merge.
    w.route_s = m.s_route_merge - half_ego + 5.5;
    let out = observation(&w);
    assert_eq!(&out[base..base + 6], &[1.6, 0.0, 1.6, 0.0, 1.6, 0.0]);
}

#[test]
fn a_scenario_without_a_merge_has_none_and_agents_carry_their_acceleration() {
    let mut w = World::new(SimConfig::default());
    w.reset(ScenarioSpec {
        family: Family::CutIn,
        seed: 5,
        difficulty: Difficulty::default(),
    });
    assert!(w.merge.is_none());
    for (i, a) in w.agents.iter_mut().enumerate() {
        a.accel = -0.5 - 0.25 * i as f32;
    }
    let out = observation(&w);
    let (base, _) = slice("merge").unwrap();
    assert_eq!(&out[base..base + 6], &[1.6, 0.0, 1.6, 0.0, 1.6, 0.0]);
    // Every vehicle row carries one of the agents' accelerations / 4; static rows carry 0.
    let (agents, _) = slice("agents").unwrap();
    let mut seen = 0;
    for k in 0..K_AGENTS {
        let row = &out[agents + k * AGENT_FEATURES..agents + (k + 1) * AGENT_FEATURES];
        if row[0] == 0.0 {
            break;
        }
        let accel = 4.0 * row[AGENT_FEATURES - 1];
        if row[9] == 1.0 {
            assert_eq!(accel, 0.0);
        } else {
            assert!(
                w.agents.iter().any(|a| (a.accel - accel).abs() < 1e-5),
                "row {k}: acceleration {accel}"
            );
            assert!(accel <= -0.5);
            seen += 1;
        }
    }
    assert!(seen > 0, "the cut-in scenario has vehicles within 60 m");
}

#[test]
fn a_merging_car_abreast_near_the_merge_point_costs_the_time_to_collision_factor() {
    let mut cfg = SimConfig::default();
    cfg.reward.ttc_threshold = 2.0;
    cfg.reward.ttc_factor = 0.5;
    let mut w = World::new(cfg);
    w.reset(ScenarioSpec {
        family: Family::Merge,
        seed: 5,
        difficulty: Difficulty::default(),
    });
    let m = w.merge.unwrap();
    let main = (0..w.agents.len())
        .find(|&i| w.agents[i].path == m.main_path)
        .unwrap();
    for a in w.agents.iter_mut() {
        a.active = false;
    }
    // The expert drives the empty road to 50 m before the merge point.
    let mut plan = vec![0.0; w.cfg.action_dim()];
    while m.s_route_merge - w.route_s > 50.0 {
        deltaplan_sim::expert_plan(&w, &mut plan);
        assert_eq!(w.step(&plan).end, deltaplan_sim::EndReason::Running);
    }
    // One plan (the expert's for the empty road) for both worlds, so only the car differs.
    deltaplan_sim::expert_plan(&w, &mut plan);
    let step = |w: &World, abreast: bool| {
        let mut w = w.clone();
        if abreast {
            let a = &mut w.agents[main];
            a.active = true;
            a.s = w.route_s - m.s_route_merge + m.s_main_merge;
            a.v = w.ego.v;
        }
        w.step(&plan).reward
    };
    let (alone, beside) = (step(&w, false), step(&w, true));
    assert!(alone > 0.0, "progress earns reward: {alone}");
    assert!(
        (beside - 0.5 * alone).abs() < 1e-3 * alone,
        "abreast: {beside}, alone: {alone}"
    );
    // Without the factor, the car beside costs nothing.
    w.cfg.reward.ttc_threshold = 0.0;
    assert_eq!(step(&w, true), step(&w, false));
}
