//! The bird's-eye-view raster: hand-placed scenes with pixels computed by hand from the
//! documented geometry, rotation, clipping, areas, agreement with the simulator's own
//! drivable-area test, spec validation, and batched rendering.

use std::collections::BTreeSet;

use deltaplan_sim::bev::{self, channel, BevSpec, BevSpecError, NUM_CHANNELS};
use deltaplan_sim::geom::{OrientedBox, Vec2};
use deltaplan_sim::road::{clothoid_free_road, RoadMap};
use deltaplan_sim::traffic::{Agent, Behaviour, Idm, TrafficLight};
use deltaplan_sim::vehicle::BicycleState;
use deltaplan_sim::{BatchEnv, Difficulty, Family, Scenario, ScenarioSpec, SimConfig, World};

/// 40 x 40 pixels at 0.5 m: the ego's centre at row 30 (5 m behind it), column 20.
const SMALL: BevSpec = BevSpec {
    height: 40,
    width: 40,
    metres_per_pixel: 0.5,
    behind_m: 5.0,
};

type Pixels = BTreeSet<(usize, usize)>;

fn lit(raster: &[u8], spec: &BevSpec, ch: usize) -> Pixels {
    let plane = &raster[ch * spec.plane()..(ch + 1) * spec.plane()];
    (0..spec.plane())
        .filter(|&i| plane[i] != 0)
        .map(|i| (i / spec.width, i % spec.width))
        .collect()
}

fn rect(rows: std::ops::RangeInclusive<usize>, cols: std::ops::RangeInclusive<usize>) -> Pixels {
    rows.flat_map(|r| cols.clone().map(move |c| (r, c)))
        .collect()
}

fn idm() -> Idm {
    Idm {
        v0: 10.0,
        headway: 1.5,
        s0: 2.0,
        a_max: 1.5,
        b: 2.0,
    }
}

/// The hand-placed scene, rotated by `theta` about the world origin: one 3.5 m lane along the
/// x axis from 0 to 200 m (the route, finish at 180 m); the ego's centre at (50, 0.3) heading
/// along the lane at 12.34 m/s; a 4 x 2 m car at 7 m/s on the lane 12 m ahead; a 2 x 1 m
/// obstacle at (55.1, 2.4); a light whose stop line is at x = 60, red at t = 0 (green from
/// 12 s, yellow from 18 s, red again from 20 s).
fn scene(theta: f32) -> World {
    let cfg = SimConfig::default();
    let rot = |p: Vec2| {
        let (s, c) = theta.sin_cos();
        Vec2::new(c * p.x - s * p.y, s * p.x + c * p.y)
    };
    let dir = Vec2::from_angle(theta);
    let mut map = RoadMap::default();
    let lane = map.add_lane(&[rot(Vec2::ZERO), rot(Vec2::new(200.0, 0.0))], 3.5, 15.0);
    let route = map.add_path(&[lane], &[Some(0)]);
    map.build_index();
    let centre = rot(Vec2::new(50.0, 0.3));
    let ego = BicycleState {
        pos: centre - dir * cfg.vehicle.rear_to_center,
        yaw: theta,
        v: 12.34,
        ..BicycleState::default()
    };
    let agent = Agent {
        path: route as u16,
        s: 62.0,
        d: 0.0,
        v: 7.0,
        accel: 0.0,
        length: 4.0,
        width: 2.0,
        idm: idm(),
        behaviour: Behaviour::Idm,
        yields_to_ego: true,
        active: true,
        pos: Vec2::ZERO,
        heading: dir,
    };
    let light = TrafficLight {
        pos: rot(Vec2::new(60.0, 0.0)),
        heading: dir,
        offset: 8.0,
        green: 6.0,
        yellow: 2.0,
        cycle: 20.0,
    };
    let scenario = Scenario {
        spec: ScenarioSpec::default(),
        map,
        lights: vec![light],
        agents: vec![agent],
        statics: vec![OrientedBox::new(rot(Vec2::new(55.1, 2.4)), theta, 2.0, 1.0)],
        ego,
        route,
        route_len: 180.0,
        merge: None,
        time_limit_steps: 1000,
    };
    let mut w = World::new(cfg);
    w.reset_from(scenario);
    w
}

fn raster(w: &World, spec: &BevSpec) -> Vec<u8> {
    let mut out = vec![77u8; spec.len()];
    bev::render(w, spec, &mut out);
    out
}

/// Every channel of the straight scene, by hand (module docs of `bev`): row `v = 30 - 2x`,
/// column `u = 20 - 2y` for an ego-frame point (x, y); a pixel is lit when its centre
/// (r + 0.5, c + 0.5) is inside.
#[test]
fn hand_placed_scene_lights_the_expected_pixels_and_no_others() {
    let w = scene(0.0);
    assert_eq!(w.time(), 0.0);
    let r = raster(&w, &SMALL);
    // The lane's edges at y = 1.45 and -2.05 (u = 17.1, 24.1): columns 17-23 in every row.
    assert_eq!(lit(&r, &SMALL, channel::DRIVABLE), rect(0..=39, 17..=23));
    // Its boundaries, lines through u = 17.1 and u = 24.1.
    let mut edges = rect(0..=39, 17..=17);
    edges.extend(rect(0..=39, 24..=24));
    assert_eq!(lit(&r, &SMALL, channel::LANE_BOUNDARIES), edges);
    // Route band: 1 m either side of y = -0.3 (u in [18.6, 22.6]), from the ego (v = 30) on.
    assert_eq!(lit(&r, &SMALL, channel::ROUTE), rect(0..=29, 19..=22));
    // The car: x in [10, 14] (v in [2, 10]), y in [-1.3, 0.7] (u in [18.6, 22.6]); the
    // obstacle: x in [4.1, 6.1] (v in [17.8, 21.8]), y in [1.6, 2.6] (u in [14.8, 16.8]).
    let car = rect(2..=9, 19..=22);
    let obstacle = rect(18..=21, 15..=16);
    let vehicles: Pixels = car.union(&obstacle).copied().collect();
    assert_eq!(lit(&r, &SMALL, channel::VEHICLES), vehicles);
    // The ego, 4.6 x 1.9 m: v in [25.4, 34.6], u in [18.1, 21.9].
    let ego = rect(25..=34, 18..=21);
    assert_eq!(lit(&r, &SMALL, channel::EGO), ego);
    // Speed: 7 m/s on the car, 12.34 m/s (123 steps of 0.1) on the ego, 0 on the obstacle.
    let speed = lit(&r, &SMALL, channel::SPEED);
    assert_eq!(speed, car.union(&ego).copied().collect());
    let plane = &r[channel::SPEED * SMALL.plane()..];
    assert_eq!(plane[5 * 40 + 20], 70);
    assert_eq!(plane[30 * 40 + 20], 123);
    // Red stop line: x in [9, 10] (v in [10, 12]), y in [-2.05, 1.45] (u in [17.1, 24.1]).
    assert_eq!(lit(&r, &SMALL, channel::LIGHT_RED), rect(10..=11, 17..=23));
    assert!(lit(&r, &SMALL, channel::LIGHT_YELLOW).is_empty());
    assert!(lit(&r, &SMALL, channel::LIGHT_GREEN).is_empty());
    // Masks are 0 or 255; a network reads them as 0 or 1.
    for ch in (0..NUM_CHANNELS).filter(|&ch| ch != channel::SPEED) {
        let plane = &r[ch * SMALL.plane()..(ch + 1) * SMALL.plane()];
        assert!(
            plane.iter().all(|&x| x == 0 || x == bev::ON),
            "channel {ch}"
        );
    }
    let mut unit = vec![0.0f32; r.len()];
    bev::to_unit_f32(&r, &mut unit);
    assert_eq!(
        unit[channel::SPEED * SMALL.plane() + 5 * 40 + 20],
        70.0 / 255.0
    );
    assert_eq!(unit[30 * 40 + 20], 1.0);
}

#[test]
fn the_raster_turns_with_the_ego() {
    let upright = raster(&scene(0.0), &SMALL);
    for theta in [0.7f32, std::f32::consts::FRAC_PI_2, -2.5, 3.0] {
        let turned = raster(&scene(theta), &SMALL);
        for ch in 0..NUM_CHANNELS {
            assert_eq!(
                lit(&turned, &SMALL, ch),
                lit(&upright, &SMALL, ch),
                "channel {} at heading {theta}",
                bev::CHANNELS[ch]
            );
        }
    }
    // Turning the ego alone (not the world) moves the world in the raster: the obstacle on
    // the left ends up ahead-right of a car turned 90 degrees left.
    let mut w = scene(0.0);
    w.ego.yaw = std::f32::consts::FRAC_PI_2;
    w.ego.pos = Vec2::new(50.0, 0.3) - Vec2::from_angle(w.ego.yaw) * w.cfg.vehicle.rear_to_center;
    let r = raster(&w, &SMALL);
    // Obstacle at world offset (5.1, 2.1) from the ego: ego frame x = 2.1, y = -5.1:
    // v in [30 - 2*2.6, 30 - 2*1.6] = [24.8, 26.8], u in [20 + 2*4.1, 20 + 2*6.1] = [28.2, 32.2].
    assert_eq!(
        lit(&r, &SMALL, channel::VEHICLES)
            .intersection(&rect(20..=30, 25..=35))
            .copied()
            .collect::<Pixels>(),
        rect(25..=26, 28..=31)
    );
}

#[test]
fn a_light_is_drawn_in_its_state_at_its_stop_line() {
    let mut w = scene(0.0);
    let stop_line = rect(10..=11, 17..=23);
    // offset 8, green 6, yellow 2, cycle 20: red at t = 0, green from 12 s, yellow from 18 s.
    for (seconds, expected) in [
        (0.0, channel::LIGHT_RED),
        (12.5, channel::LIGHT_GREEN),
        (18.5, channel::LIGHT_YELLOW),
        (21.0, channel::LIGHT_RED),
    ] {
        w.step_count = (seconds / w.cfg.dt).round() as u32;
        let r = raster(&w, &SMALL);
        for ch in [
            channel::LIGHT_RED,
            channel::LIGHT_YELLOW,
            channel::LIGHT_GREEN,
        ] {
            let want = if ch == expected {
                stop_line.clone()
            } else {
                Pixels::new()
            };
            assert_eq!(lit(&r, &SMALL, ch), want, "t = {seconds} s, channel {ch}");
        }
    }
}

#[test]
fn objects_beyond_the_edges_are_clipped() {
    let mut w = scene(0.0);
    w.agents.clear();
    w.statics = vec![
        // Straddles the left edge: y in [9.2, 11.2] -> u in [-2.4, 1.6]; x in [5.1, 6.1].
        OrientedBox::new(Vec2::new(55.6, 10.5), 0.0, 1.0, 2.0),
        // Straddles the top edge: x in [13.6, 17.6] -> v in [-5.2, 2.8]; y in [-0.7, 0.3].
        OrientedBox::new(Vec2::new(65.6, 0.1), 0.0, 4.0, 1.0),
        // Wholly outside: 100 m ahead, 40 m to the right, 30 m behind.
        OrientedBox::new(Vec2::new(150.0, 0.3), 0.0, 4.0, 2.0),
        OrientedBox::new(Vec2::new(50.0, -40.0), 0.4, 4.0, 2.0),
        OrientedBox::new(Vec2::new(20.0, 0.3), 0.0, 4.0, 2.0),
    ];
    let r = raster(&w, &SMALL);
    let mut want = rect(18..=19, 0..=1); // v in [17.8, 19.8]
    want.extend(rect(0..=2, 19..=20)); // u in [19.4, 21.4]
    assert_eq!(lit(&r, &SMALL, channel::VEHICLES), want);
    // A route that ended behind the ego draws nothing.
    w.route_len = w.route_s - 1.0;
    assert!(lit(&raster(&w, &SMALL), &SMALL, channel::ROUTE).is_empty());
}

#[test]
fn a_box_covers_its_area_in_pixels() {
    let fine = BevSpec {
        height: 200,
        width: 200,
        metres_per_pixel: 0.1,
        behind_m: 10.0,
    };
    let mut w = scene(0.0);
    w.agents.clear();
    let mut worst = 0.0f32;
    let mut total_error = 0.0f32;
    let mut k = 0u32;
    // Boxes of cars, trucks and bollards at many headings and sub-pixel offsets.
    for (length, width) in [(4.6, 1.9), (12.0, 2.5), (0.8, 0.8)] {
        for i in 0..20 {
            k += 1;
            let yaw = 0.37 * i as f32;
            let centre = Vec2::new(52.0 + 0.013 * k as f32, 0.3 + 0.029 * k as f32);
            w.statics = vec![OrientedBox::new(centre, yaw, length, width)];
            let r = raster(&w, &fine);
            let count = lit(&r, &fine, channel::VEHICLES).len() as f32;
            let area = length * width;
            let err = (count * 0.01 - area) / area;
            worst = worst.max(err.abs());
            total_error += err;
        }
    }
    // Centre sampling: each box within 6% (the 0.8 m bollard is 64 pixels), and no bias.
    assert!(worst < 0.06, "worst relative area error {worst}");
    assert!((total_error / k as f32).abs() < 0.01, "mean {total_error}");
}

/// The route band along a 20 m-radius left bend: every lit pixel lies within the band (plus
/// half a pixel diagonal) of the known circle, and every pixel well inside it is lit.
#[test]
fn the_route_band_follows_a_known_curve() {
    let cfg = SimConfig::default();
    let radius = 20.0f32;
    let mut dense = Vec::new();
    clothoid_free_road(
        Vec2::ZERO,
        0.0,
        &[(20.0, 0.0), (std::f32::consts::PI * radius, 1.0 / radius)],
        &mut dense,
    );
    let mut map = RoadMap::default();
    let lane = map.add_lane(&dense, 3.5, 10.0);
    let route = map.add_path(&[lane], &[None]);
    map.build_index();
    let route_len = map.path_length(route) - 1.0;
    // The ego at x = 15 on the straight, heading along it; the circle's centre at (20, 20).
    let ego = BicycleState {
        pos: Vec2::new(15.0 - cfg.vehicle.rear_to_center, 0.0),
        v: 5.0,
        ..BicycleState::default()
    };
    let mut w = World::new(cfg);
    w.reset_from(Scenario {
        map,
        ego,
        route,
        route_len,
        time_limit_steps: 1000,
        ..Scenario::default()
    });
    let spec = BevSpec::default();
    let r = raster(&w, &spec);
    let lit_route = lit(&r, &spec, channel::ROUTE);
    let centre_world = |row: usize, col: usize| {
        let p = spec.pixel_centre(row, col);
        Vec2::new(15.0 + p.x, p.y)
    };
    // Distance of a world point from the route's centreline: the straight from (0, 0) to
    // (20, 0), then the half circle about (20, 20) from (20, 0) to (20, 40).
    let off_route = |p: Vec2| {
        let straight = (p - Vec2::new(p.x.clamp(0.0, 20.0), 0.0)).norm();
        let arc = if p.x >= 20.0 {
            ((p - Vec2::new(20.0, radius)).norm() - radius).abs()
        } else {
            (p - Vec2::new(20.0, 0.0))
                .norm()
                .min((p - Vec2::new(20.0, 2.0 * radius)).norm())
        };
        straight.min(arc)
    };
    let half_diag = spec.metres_per_pixel * std::f32::consts::FRAC_1_SQRT_2;
    let mut inside = 0;
    for row in 0..spec.height {
        for col in 0..spec.width {
            let p = centre_world(row, col);
            let on = lit_route.contains(&(row, col));
            let d = off_route(p);
            // The band starts across the route at the ego (x = 15); in view, the whole arc
            // lies at x >= 20.
            if on {
                assert!(
                    d <= bev::ROUTE_HALF_WIDTH + 0.05,
                    "({row}, {col}) lit {d} m off the route"
                );
                assert!(p.x >= 15.0, "({row}, {col}) lit behind the ego");
            } else if p.x > 15.0 && d < bev::ROUTE_HALF_WIDTH - half_diag {
                panic!("({row}, {col}) is {d} m from the route ahead but not lit");
            }
            inside += usize::from(on);
        }
    }
    // The band really is there: at least 20 m of it (2 m wide at 0.75 m/px).
    assert!(inside as f32 * 0.5625 > 40.0, "{inside} route pixels");
}

/// On every family's generated roads, the drivable channel agrees with the simulator's own
/// off-road test (`RoadMap::is_drivable`, a different algorithm: capsules behind a grid) at the
/// pixel centres, except where the two geometries differ by a hair along an edge.
#[test]
fn drivable_area_agrees_with_the_off_road_test() {
    let cfg = SimConfig::default();
    let spec = BevSpec::default();
    for family in Family::ALL {
        for seed in 0..4 {
            let mut w = World::new(cfg);
            w.reset(ScenarioSpec {
                family,
                seed,
                difficulty: Difficulty::default().harder(),
            });
            let r = raster(&w, &spec);
            let c = w.ego.center(&w.cfg.vehicle);
            let h = Vec2::from_angle(w.ego.yaw);
            let (mut disagree, mut on) = (0, 0);
            for row in 0..spec.height {
                for col in 0..spec.width {
                    let p = spec.pixel_centre(row, col).from_frame(c, h);
                    let want = w.map.is_drivable(p);
                    let got = r[row * spec.width + col] == bev::ON;
                    disagree += usize::from(want != got);
                    on += usize::from(want);
                }
            }
            assert!(on > 300, "{family:?} {seed}: {on} drivable pixels");
            assert!(
                disagree * 500 <= spec.plane(),
                "{family:?} seed {seed}: {disagree} of {} pixels disagree",
                spec.plane()
            );
        }
    }
}

#[test]
fn specs_are_validated_with_named_errors() {
    assert_eq!(BevSpec::default().validate(), Ok(()));
    assert_eq!(BevSpec::default().shape(), [9, 64, 64]);
    let err = BevSpec {
        metres_per_pixel: 0.0,
        ..BevSpec::default()
    }
    .validate()
    .unwrap_err();
    assert!(
        matches!(
            err,
            BevSpecError::OutOfRange {
                field: "metres_per_pixel",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("metres_per_pixel"), "{err}");
    let nan = BevSpec {
        metres_per_pixel: f32::NAN,
        ..BevSpec::default()
    };
    assert!(nan.validate().is_err());
    let tall = BevSpec {
        height: 4096,
        ..BevSpec::default()
    };
    assert!(tall
        .validate()
        .unwrap_err()
        .to_string()
        .contains("`height`"));
    let behind = BevSpec {
        behind_m: 48.5,
        ..BevSpec::default()
    };
    assert_eq!(
        behind.validate(),
        Err(BevSpecError::EgoOutside {
            behind_m: 48.5,
            extent_m: 48.0
        })
    );
    // The geometry helper: the pixel below-left of the ego's centre.
    let p = SMALL.pixel_centre(30, 19);
    assert_eq!((p.x, p.y), (-0.25, 0.25));
}

/// Batched rendering equals rendering each world alone, and is bit-identical for 1 and 2
/// threads, across episode boundaries.
#[test]
fn batched_rasters_are_per_world_rasters_for_any_thread_count() {
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let cfg = SimConfig::default();
            let n = 10;
            let spec = BevSpec::default();
            let mut env = BatchEnv::train(cfg, n, 5, Family::ALL.to_vec(), Difficulty::default());
            let mut buf = deltaplan_sim::StepBuffers::new(n);
            let mut actions = vec![0.0; n * cfg.action_dim()];
            let mut rasters = vec![0u8; n * spec.len()];
            let mut bits = Vec::new();
            for t in 0..120 {
                env.expert_actions(&mut actions);
                env.step(&actions, &mut buf);
                env.observe_bev(&spec, &mut rasters);
                if t % 40 == 0 {
                    for i in 0..n {
                        let alone = raster(env.world(i), &spec);
                        assert!(alone == rasters[i * spec.len()..(i + 1) * spec.len()]);
                    }
                }
                bits.extend_from_slice(&rasters);
            }
            bits
        })
    };
    let one = run(1);
    assert!(one == run(2), "BEV rasters differ between 1 and 2 threads");
}

/// A batch whose observations carry the raster drives the same trajectories as the plain
/// batch; each row is the plain observation followed by the world's raster / 255, and an
/// episode's final observation carries the raster of its last state (a copy of the world,
/// stepped by hand, rendered before the batch resets it).
#[test]
fn observations_with_a_raster_are_the_vector_then_the_raster_as_floats() {
    let cfg = SimConfig::default();
    let n = 6;
    let new = || BatchEnv::train(cfg, n, 11, Family::ALL.to_vec(), Difficulty::default());
    let mut plain = new();
    let mut wide = new().with_bev_observation(SMALL).unwrap();
    let (od, r) = (wide.obs_dim(), SMALL.len());
    assert_eq!(od, deltaplan_sim::OBS_DIM + r);
    assert_eq!(wide.bev_observation(), Some(SMALL));
    let mut pb = deltaplan_sim::StepBuffers::new(n);
    let mut wb = deltaplan_sim::StepBuffers::with_obs_dim(n, od);
    let mut actions = vec![0.0; n * cfg.action_dim()];
    let mut obs = vec![0.0; n * od];
    let mut ended = 0;
    for _ in 0..600 {
        plain.expert_actions(&mut actions);
        let before: Vec<World> = (0..n).map(|i| plain.world(i).clone()).collect();
        plain.step(&actions, &mut pb);
        wide.step(&actions, &mut wb);
        assert_eq!(pb.reward, wb.reward);
        assert_eq!(pb.truncated, wb.truncated);
        wide.observe(&mut obs);
        assert!(obs == wb.obs, "observe and step disagree");
        for i in 0..n {
            let row = &wb.obs[i * od..(i + 1) * od];
            let plain_row = &pb.obs[i * deltaplan_sim::OBS_DIM..(i + 1) * deltaplan_sim::OBS_DIM];
            assert!(row[..deltaplan_sim::OBS_DIM] == *plain_row);
            let want = raster(plain.world(i), &SMALL);
            assert!(row[deltaplan_sim::OBS_DIM..]
                .iter()
                .zip(&want)
                .all(|(&f, &b)| f == f32::from(b) / 255.0));
            if pb.terminated[i] || pb.truncated[i] {
                ended += 1;
                let fin = &wb.final_obs[i * od..(i + 1) * od];
                let plain_fin =
                    &pb.final_obs[i * deltaplan_sim::OBS_DIM..(i + 1) * deltaplan_sim::OBS_DIM];
                assert!(fin[..deltaplan_sim::OBS_DIM] == *plain_fin);
                let mut last = before[i].clone();
                last.step(&actions[i * cfg.action_dim()..(i + 1) * cfg.action_dim()]);
                let want_final = raster(&last, &SMALL);
                assert!(fin[deltaplan_sim::OBS_DIM..]
                    .iter()
                    .zip(&want_final)
                    .all(|(&f, &b)| f == f32::from(b) / 255.0));
                assert!(
                    want_final != want,
                    "the final raster is not the new episode's first"
                );
            }
        }
    }
    assert!(ended >= n / 2, "{ended} episodes ended in 600 steps");
    let bad = BevSpec { height: 2, ..SMALL };
    assert!(new().with_bev_observation(bad).is_err());
}
