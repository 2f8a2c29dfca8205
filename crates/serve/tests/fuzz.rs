//! A runtime's messages are untrusted input: damaged variants of an egomotion message and of a
//! route message (their protobuf bytes) go through what the server does with them (decoding,
//! the session's checks, the observation a drive call builds) without a panic, and every
//! refusal says what is wrong (the decoder's reason, or the field). The server answers a
//! non-finite observation with INVALID_ARGUMENT; here it counts as a refusal.
//!
//! The suite runs a short version; `DELTAPLAN_FUZZ_INPUTS=N cargo test --release -p
//! deltaplan-serve --test fuzz -- --ignored` runs N inputs per message.

use deltaplan_serve::geometry::Pose3;
use deltaplan_serve::observation::{observe, Assumptions};
use deltaplan_serve::pb::{common, egodriver};
use deltaplan_serve::session::Session;
use deltaplan_sim::obs::OBS_DIM;
use deltaplan_sim::SimConfig;
use deltaplan_stdx::fuzz::fuzz;
use prost::Message;

/// Three rig poses 0.1 s apart along +x at 8 m/s, each with its dynamic state.
fn egomotion() -> egodriver::RolloutEgoTrajectory {
    let vec3 = |x, y, z| Some(common::Vec3 { x, y, z });
    let poses = (0..3)
        .map(|k| common::PoseAtTime {
            pose: Some(Pose3::planar(0.8 * k as f64, 0.1, 0.02).to_proto()),
            timestamp_us: 100_000 * k,
        })
        .collect();
    let state = common::DynamicState {
        linear_velocity: vec3(8.0, 0.0, 0.0),
        angular_velocity: vec3(0.0, 0.0, 0.01),
        linear_acceleration: vec3(0.5, 0.0, 0.0),
        angular_acceleration: vec3(0.0, 0.0, 0.0),
    };
    egodriver::RolloutEgoTrajectory {
        session_uuid: "fuzz".into(),
        trajectory: Some(common::Trajectory { poses }),
        dynamic_states: vec![state; 3],
    }
}

/// A route of six waypoints bending left, in the rig frame.
fn route() -> egodriver::RouteRequest {
    let waypoints = (0..6)
        .map(|k| {
            let x = 10.0 * k as f32;
            common::Vec3 {
                x,
                y: 0.002 * x * x,
                z: 0.0,
            }
        })
        .collect();
    egodriver::RouteRequest {
        session_uuid: "fuzz".into(),
        route: Some(egodriver::Route {
            timestamp_us: 200_000,
            waypoints,
        }),
    }
}

/// What a drive call builds from the session: the observation, which must be finite.
fn observation(session: &Session, obs: &mut [f32]) -> Result<(), String> {
    let latest = session.latest().ok_or("no egomotion kept")?;
    let sim = SimConfig::default();
    observe(
        &latest.motion,
        &session.route_in_latest_rig(),
        &sim,
        &Assumptions::default(),
        obs,
    );
    match obs.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(format!("observation[{i}] is not finite")),
        None => Ok(()),
    }
}

fn fuzz_messages(n: u64) {
    let named = |m: &str| !m.trim().is_empty();
    let mut obs = vec![0.0f32; OBS_DIM];
    // Damaged egomotion, then the valid route.
    let valid_route = route();
    let parse = |bytes: &[u8]| {
        let m = egodriver::RolloutEgoTrajectory::decode(bytes).map_err(|e| e.to_string())?;
        let mut s = Session::default();
        s.add_egomotion(&m).map_err(|e| e.to_string())?;
        s.set_route(valid_route.route.as_ref())
            .map_err(|e| e.to_string())?;
        observation(&s, &mut obs)
    };
    fuzz(&[egomotion().encode_to_vec()], n, 21, parse, named).print_and_check("egomotion");
    // The valid egomotion, then a damaged route.
    let motion = egomotion();
    let parse = |bytes: &[u8]| {
        let m = egodriver::RouteRequest::decode(bytes).map_err(|e| e.to_string())?;
        let mut s = Session::default();
        s.add_egomotion(&motion).map_err(|e| e.to_string())?;
        s.set_route(m.route.as_ref()).map_err(|e| e.to_string())?;
        observation(&s, &mut obs)
    };
    fuzz(&[route().encode_to_vec()], n, 22, parse, named).print_and_check("route");
}

#[test]
fn the_valid_messages_give_a_finite_observation_of_the_motion() {
    let mut s = Session::default();
    s.add_egomotion(&egomotion()).unwrap();
    s.set_route(route().route.as_ref()).unwrap();
    let mut obs = vec![0.0f32; OBS_DIM];
    observation(&s, &mut obs).unwrap();
    // The ego slice's speed is the sent 8 m/s, scaled by 10.
    assert!((obs[0] - 0.8).abs() < 1e-6, "{}", obs[0]);
}

#[test]
fn damaged_messages_are_refused_without_panics() {
    fuzz_messages(20_000);
}

#[test]
#[ignore = "long: DELTAPLAN_FUZZ_INPUTS=N"]
fn fuzz_long() {
    let n = std::env::var("DELTAPLAN_FUZZ_INPUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    fuzz_messages(n);
}
