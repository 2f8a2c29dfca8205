//! SUMO's driver model as the demonstrator, with real SUMO processes: the recorded labels are
//! the positions SUMO reported 0.2 .. 2.0 s later, put into the ego frame by hand; SUMO, not
//! deltaplan, drives; and a recording is the same bits twice, for one thread or two.

mod common;

use deltaplan_sim::config::SimConfig;
use deltaplan_sim::geom::Vec2;
use deltaplan_sim::obs::OBS_DIM;
use deltaplan_sumo::demo::{DemoRun, Demonstrator, DrivenEpisode};
use deltaplan_sumo::locate::SumoBinaries;
use deltaplan_sumo::netgen::{generate, NetKind};
use deltaplan_sumo::{NetContext, SumoConfig, SumoWorld};
use std::sync::Arc;

fn nets(bins: &SumoBinaries, name: &str) -> Vec<Arc<NetContext>> {
    let dir = common::scratch(name);
    [(NetKind::Grid, 1), (NetKind::Spider, 2)]
        .iter()
        .map(|&(kind, seed)| {
            Arc::new(NetContext::load(generate(bins, &dir, kind, seed, 1500).unwrap()).unwrap())
        })
        .collect()
}

fn record(bins: &SumoBinaries, nets: &[Arc<NetContext>], run: &DemoRun) -> Vec<DrivenEpisode> {
    let demonstrator = Demonstrator {
        sim: SimConfig::default(),
        sumo: SumoConfig::default(),
        nets,
        bins,
    };
    demonstrator.record(run, &|| {}).unwrap()
}

#[test]
fn labels_are_where_sumo_had_the_ego_later_in_the_frame_of_now() {
    let Some(bins) = common::sumo_or_skip("labels_are_where_sumo_had_the_ego_later") else {
        return;
    };
    let nets = nets(&bins, "demo_labels");
    let run = DemoRun {
        seed: 8,
        worlds: 1,
        steps: 300,
    };
    let episodes = record(&bins, &nets, &run);
    let first = &episodes[0];
    let cfg = SimConfig::default();
    let (h, a) = (cfg.horizon, cfg.action_dim());
    assert!(first.samples() > 100, "{} samples", first.samples());

    // The same episode again (SUMO is deterministic for the same seed and commands; reading
    // SUMO's pose changes nothing), reading where SUMO has the ego at every state with a plain
    // get: its front bumper and its angle.
    let mut w = SumoWorld::new(cfg, SumoConfig::default(), Arc::clone(&nets[0]), bins);
    w.reset_driven_by_sumo(first.seed).unwrap();
    // SUMO drives this ego: deltaplan's step is refused.
    assert!(w.step(&vec![0.0; a]).is_err());
    let mut fronts = Vec::new();
    let mut obs = Vec::new();
    loop {
        fronts.push(w.sumo_pose("ego").unwrap());
        let mut o = [0.0; OBS_DIM];
        w.observe(&mut o);
        obs.extend_from_slice(&o);
        if fronts.len() == first.samples() + 2 * h {
            break;
        }
        let r = w.step_driven_by_sumo().unwrap();
        assert_eq!(r.end, deltaplan_sim::EndReason::Running);
    }
    // The observations are the world's own, bit for bit.
    assert_eq!(obs[..first.obs.len()], first.obs[..]);
    // By hand: SUMO's position is the front bumper, the box centre half a length behind it;
    // waypoint j of state t is the centre at t + 2 (j + 1) steps (0.2 s apart at 0.1 s
    // steps), rotated into the heading at t.
    let half = 0.5 * cfg.vehicle.length;
    let centre = |k: usize| {
        let (front, yaw) = fronts[k];
        front - Vec2::new(yaw.cos(), yaw.sin()) * half
    };
    // The episode turns among the labelled states (the box centre, the rear axle and the
    // front bumper then follow different paths: the label's reference point matters).
    let turn = fronts[..first.samples()]
        .iter()
        .map(|&(_, yaw)| deltaplan_sim::geom::wrap_angle(yaw - fronts[0].1).abs())
        .fold(0.0f32, f32::max);
    assert!(turn > 1.0, "the episode does not turn ({turn} rad)");
    let mut worst = 0.0f32;
    for (t, &(_, yaw)) in fronts.iter().enumerate().take(first.samples()) {
        let (c, s) = (yaw.cos(), yaw.sin());
        for j in 0..h {
            let d = centre(t + 2 * (j + 1)) - centre(t);
            let (x, y) = (d.x * c + d.y * s, -d.x * s + d.y * c);
            let label = &first.labels[t * a + 2 * j..t * a + 2 * j + 2];
            worst = worst.max((label[0] - x).abs()).max((label[1] - y).abs());
        }
    }
    assert!(
        worst < 1e-3,
        "labels differ from SUMO's positions by {worst} m"
    );
    // SUMO drove: the ego got near the limit and covered ground over 2 s.
    let moved = (0..first.samples())
        .filter(|t| first.labels[t * a + a - 2] > 5.0)
        .count();
    assert!(moved > first.samples() / 4, "{moved} moving samples");
}

#[test]
fn a_recording_is_the_same_bits_twice_for_one_thread_or_two() {
    let Some(bins) = common::sumo_or_skip("a_recording_is_the_same_bits_twice") else {
        return;
    };
    let nets = nets(&bins, "demo_determinism");
    let run = DemoRun {
        seed: 9,
        worlds: 2,
        steps: 400,
    };
    let pool = |n| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .unwrap()
    };
    let one = pool(1).install(|| record(&bins, &nets, &run));
    let two = pool(2).install(|| record(&bins, &nets, &run));
    assert_eq!(one, two);
    // Both worlds drove, in world order; every state of an episode that ended is labelled
    // but its last 2 s.
    assert!(one.iter().any(|e| e.world == 0) && one.iter().any(|e| e.world == 1));
    assert!(one.windows(2).all(|p| p[0].world <= p[1].world));
    let cfg = SimConfig::default();
    for e in one
        .iter()
        .filter(|e| e.stats.end != deltaplan_sim::EndReason::Running)
    {
        assert_eq!(e.samples() + 2 * cfg.horizon, e.stats.steps as usize + 1);
        assert_eq!(e.labels.len(), e.samples() * cfg.action_dim());
    }
    // Another seed, other episodes.
    let other = record(&bins, &nets, &DemoRun { seed: 10, ..run });
    assert_ne!(one[0].seed, other[0].seed);
}
