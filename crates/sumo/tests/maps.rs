//! Networks of real places with real SUMO: a CARLA town converted by netconvert, driven by the
//! expert, and a RESCO city scenario running its calibrated demand from its own begin time,
//! with its sidewalks and bicycle lanes kept out of the road. The packages that ship the maps
//! (`sumo-rl`, `py123d`) are installed beside SUMO; without them the tests skip, saying why,
//! unless `DELTAPLAN_REQUIRE_SUMO=1` (CI installs both).

mod common;

use deltaplan_sim::config::SimConfig;
use deltaplan_sim::events::EndReason;
use deltaplan_sumo::maps::{Map, MapError};
use deltaplan_sumo::netgen::NetFiles;
use deltaplan_sumo::{NetContext, SumoConfig, SumoWorld};
use std::sync::Arc;

/// The map's files prepared in a scratch directory; `None` (skip) when SUMO or the package
/// shipping the map is absent and CI does not require them.
fn prepared(test: &str, map: &str) -> Option<(deltaplan_sumo::locate::SumoBinaries, NetFiles)> {
    let bins = common::sumo_or_skip(test)?;
    let dir = common::scratch(test);
    match Map::parse(map).unwrap().prepare(&bins, &dir, 7, 1500) {
        Ok(files) => Some((bins, files)),
        Err(e @ MapError::Missing { .. })
            if std::env::var("DELTAPLAN_REQUIRE_SUMO").as_deref() != Ok("1") =>
        {
            eprintln!("SKIPPED {test}: {e}");
            None
        }
        Err(e) => panic!("{test}: {e}"),
    }
}

#[test]
fn a_carla_town_converts_and_the_expert_completes_its_routes() {
    let Some((bins, files)) = prepared("carla_town01", "carla:Town01") else {
        return;
    };
    assert_eq!((files.name.as_str(), files.begin), ("town01", 0.0));
    let net = Arc::new(NetContext::load(files).unwrap());
    assert!(net.network.lanes.iter().filter(|l| l.cars).count() > 100);
    let mut w = SumoWorld::new(SimConfig::default(), SumoConfig::default(), net, bins);
    let mut seen_traffic = false;
    for seed in 0..2 {
        let end = common::expert_episode(&mut w, seed, |w, _| {
            seen_traffic |= !w.neighbours.is_empty();
        });
        assert_eq!(end, EndReason::RouteCompleted, "seed {seed}: {:?}", w.stats);
    }
    assert!(seen_traffic, "no SUMO vehicle ever came near the ego");
}

#[test]
fn a_resco_city_runs_its_own_demand_from_its_begin_time() {
    let Some((bins, files)) = prepared("resco_cologne1", "resco:cologne1") else {
        return;
    };
    // cologne1.sumocfg: begin 25200 (7 am), its route file, and the ego's type beside them.
    assert_eq!(files.begin, 25_200.0);
    assert_eq!(files.routes.len(), 2);
    assert!(files.routes[0].ends_with("cologne1.rou.xml"));
    let net = Arc::new(NetContext::load(files).unwrap());
    // The demand starts at 7 am: SUMO's traffic meets the ego within its first 30 s (with a
    // begin time of 0 the network would stay empty for seven hours).
    let mut w = SumoWorld::new(SimConfig::default(), SumoConfig::default(), net, bins);
    let mut plan = vec![0.0; w.cfg.action_dim()];
    w.reset(1).unwrap();
    let mut seen_traffic = false;
    while w.time() < 30.0 && !seen_traffic {
        w.expert_plan(&mut plan);
        if w.step(&plan).unwrap().end != EndReason::Running {
            w.reset(2).unwrap();
        }
        seen_traffic |= !w.neighbours.is_empty();
    }
    assert!(seen_traffic, "no SUMO vehicle came near the ego in 30 s");
}

#[test]
fn a_citys_sidewalks_are_neither_road_nor_route() {
    let Some((_, files)) = prepared("resco_ingolstadt1", "resco:ingolstadt1") else {
        return;
    };
    assert_eq!(files.begin, 57_600.0);
    let net = NetContext::load(files).unwrap();
    // ingolstadt1 has 11 pedestrian-only lanes, e.g. -164051413_0 (2 m wide).
    let sidewalk = net.network.lane("-164051413_0").unwrap();
    let lane = &net.network.lanes[sidewalk];
    assert!(!lane.cars);
    let middle = lane.shape[0].lerp(lane.shape[1], 0.5);
    let on_car_lane = net.network.lanes.iter().any(|l| {
        l.cars
            && l.shape
                .windows(2)
                .any(|s| distance_to_segment(middle, s[0], s[1]) < 0.5 * l.width)
    });
    assert_eq!(net.is_drivable(middle), on_car_lane);
    let mut rng = deltaplan_stdx::seed::rng(3, 4);
    let mut routes = 0;
    for _ in 0..50 {
        if let Some(r) = net.network.random_route(&mut rng, 100.0) {
            routes += 1;
            assert!(r.lanes.iter().all(|&l| net.network.lanes[l].cars));
        }
    }
    assert!(routes > 40, "{routes} of 50 routes drawn");
}

fn distance_to_segment(
    p: deltaplan_sim::geom::Vec2,
    a: deltaplan_sim::geom::Vec2,
    b: deltaplan_sim::geom::Vec2,
) -> f32 {
    let ab = b - a;
    let t = ((p - a).dot(ab) / ab.norm_sq().max(1e-9)).clamp(0.0, 1.0);
    (p - (a + ab * t)).norm()
}
