//! One SUMO world with real SUMO processes on generated networks: the expert completes its
//! routes, SUMO has the ego where deltaplan drives it, and collisions and leaving the road end
//! the episode as in the built-in world.

mod common;

use deltaplan_sim::config::SimConfig;
use deltaplan_sim::events::EndReason;
use deltaplan_sim::geom::Vec2;
use deltaplan_sumo::locate::SumoBinaries;
use deltaplan_sumo::netgen::{generate, NetKind};
use deltaplan_sumo::{NetContext, SumoConfig, SumoWorld};
use std::sync::Arc;

fn world(bins: SumoBinaries, name: &str, kind: NetKind) -> SumoWorld {
    let dir = common::scratch(name);
    let files = generate(&bins, &dir, kind, 3, 1500).unwrap();
    let net = Arc::new(NetContext::load(files).unwrap());
    SumoWorld::new(SimConfig::default(), SumoConfig::default(), net, bins)
}

/// A plan that keeps speed `v` straight ahead.
fn straight(w: &SumoWorld, v: f32) -> Vec<f32> {
    let dt = w.cfg.controller.waypoint_dt;
    (1..=w.cfg.horizon)
        .flat_map(|j| [v * j as f32 * dt, 0.0])
        .collect()
}

#[test]
fn the_expert_completes_routes_and_sumo_sees_the_ego_where_it_is() {
    let Some(bins) = common::sumo_or_skip("the_expert_completes_routes") else {
        return;
    };
    for kind in [NetKind::Grid, NetKind::Spider] {
        let mut w = world(bins.clone(), &format!("expert_{}", kind.name()), kind);
        let mut seen_traffic = false;
        // Episode 2 reuses the SUMO process of episode 1 (only the ego is replaced).
        for seed in 0..2 {
            let end = common::expert_episode(&mut w, seed, |w, end| {
                seen_traffic |= !w.neighbours.is_empty();
                if w.step_count.is_multiple_of(50) && end == EndReason::Running {
                    // SUMO's ego: front bumper where deltaplan's box has it, same heading.
                    let vp = w.cfg.vehicle;
                    let h = Vec2::from_angle(w.ego.yaw);
                    let front = w.ego.center(&vp) + h * (0.5 * vp.length);
                    let (p, yaw) = w.sumo_pose("ego").unwrap();
                    // SUMO (no sublane model) keeps vehicles on a lane's centreline: it has the
                    // ego at the same place along its route, less its lateral offset (inside
                    // junctions, on the internal lane it maps the ego to): up to 0.78 m measured.
                    let d = (p - front).norm();
                    assert!(
                        d < 1.0,
                        "{p:?} vs {front:?}, lateral offset {}",
                        w.route_lat
                    );
                    let d = deltaplan_sim::geom::wrap_angle(yaw - w.ego.yaw);
                    assert!(d.abs() < 1e-3, "{yaw} vs {}", w.ego.yaw);
                }
            });
            assert_eq!(
                end,
                EndReason::RouteCompleted,
                "{kind:?} seed {seed}: {:?}",
                w.stats
            );
            assert_eq!(w.stats.route_completion, 100.0);
            assert!(w.stats.mean_speed() > 2.0, "{:?}", w.stats);
        }
        assert!(
            seen_traffic,
            "{kind:?}: SUMO's traffic was never near the ego"
        );
    }
}

#[test]
fn driving_into_a_sumo_car_is_an_at_fault_collision() {
    let Some(bins) = common::sumo_or_skip("driving_into_a_sumo_car") else {
        return;
    };
    let mut w = world(bins, "collision", NetKind::Grid);
    let mut plan = vec![0.0; w.cfg.action_dim()];
    for seed in 0..20 {
        w.reset(seed).unwrap();
        for _ in 0..300 {
            let c = w.ego.center(&w.cfg.vehicle);
            let h = Vec2::from_angle(w.ego.yaw);
            // A car ahead in the ego's lane.
            let ahead = w.neighbours.iter().copied().find(|n| {
                let r = n.center - c;
                r.dot(h) > 5.0
                    && r.dot(h) < 40.0
                    && h.cross(r).abs() < 1.0
                    && n.heading.dot(h) > 0.9
            });
            if let Some(n) = ahead {
                // Put the ego 2 m behind its centre (the boxes overlap), driving at 5 m/s.
                let vp = w.cfg.vehicle;
                w.ego.yaw = n.heading.y.atan2(n.heading.x);
                w.ego.pos = n.center - n.heading * (2.0 + vp.rear_to_center);
                w.ego.v = 5.0;
                let r = w.step(&straight(&w, 5.0)).unwrap();
                assert_eq!(r.end, EndReason::CollisionVehicle, "{:?}", w.stats);
                assert_eq!(w.stats.collisions_vehicle, 1);
                assert_eq!(w.stats.collisions_vehicle_not_at_fault, 0);
                assert!(r.reward < 0.0, "a collision is penalised: {}", r.reward);
                return;
            }
            w.expert_plan(&mut plan);
            if w.step(&plan).unwrap().end != EndReason::Running {
                break;
            }
        }
    }
    panic!("no SUMO car came within 40 m ahead in 20 episodes");
}

#[test]
fn leaving_the_road_ends_the_episode() {
    let Some(bins) = common::sumo_or_skip("leaving_the_road_ends_the_episode") else {
        return;
    };
    let mut w = world(bins, "offroad", NetKind::Grid);
    w.reset(7).unwrap();
    // 12 m to the right of the route lane's centreline, beside the start: no lane there (grid
    // blocks are at least 100 m wide) and no junction.
    let h = Vec2::from_angle(w.ego.yaw);
    let side = w.ego.pos - h.perp() * 12.0;
    w.ego.pos = side;
    let corners = w.ego.bbox(&w.cfg.vehicle).corners();
    assert!(corners.iter().all(|&c| !w.net.is_drivable(c)));
    let r = w.step(&straight(&w, w.ego.v)).unwrap();
    assert_eq!(r.end, EndReason::OffRoad);
    assert_eq!(w.stats.offroad, 1);
}
