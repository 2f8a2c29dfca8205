//! The egodriver service called as tonic calls it (the trait's methods), with a planner on a
//! thread of its own: a whole session answered with the hand-computed trajectory, and every
//! malformed request refused with the gRPC status that names the problem.

use std::sync::mpsc;

use deltaplan_eval::PlannerError;
use deltaplan_serve::geometry::Pose3;
use deltaplan_serve::pb::common;
use deltaplan_serve::pb::egodriver::egodriver_service_server::EgodriverService;
use deltaplan_serve::pb::egodriver::{
    DriveRequest, DriveSessionCloseRequest, DriveSessionRequest, RolloutCameraImage,
    RolloutEgoTrajectory, Route, RouteRequest,
};
use deltaplan_serve::service::{plan_jobs, Egodriver, PlanJob};
use deltaplan_serve::Assumptions;
use deltaplan_sim::obs::OBS_DIM;
use deltaplan_sim::SimConfig;
use tonic::{Code, Request};

/// Runs `f` against a service whose planner plans 1 m per waypoint straight ahead (the centre
/// at x = j + 1), or fails (a planner error) when the ego is more than two half lanes off its
/// route.
fn with_service(f: impl AsyncFnOnce(&Egodriver)) {
    let sim = SimConfig::default();
    let (jobs, queue) = mpsc::channel::<PlanJob>();
    let planner = std::thread::spawn(move || {
        let mut planner = |obs: &[f32], plans: &mut [f32]| -> Result<(), PlannerError> {
            for (o, p) in obs.chunks_exact(OBS_DIM).zip(plans.chunks_exact_mut(20)) {
                if o[4].abs() > 2.0 {
                    return Err(PlannerError::new("far off the route"));
                }
                for (j, w) in p.chunks_exact_mut(2).enumerate() {
                    w[0] = (j + 1) as f32;
                    w[1] = 0.0;
                }
            }
            Ok(())
        };
        plan_jobs(&mut planner, &queue, 10, 8);
    });
    let service = Egodriver::new(jobs, sim, Assumptions::default(), "test".into());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    runtime.block_on(f(&service));
    drop(service);
    planner.join().expect("planner thread");
}

fn start(uuid: &str) -> Request<DriveSessionRequest> {
    Request::new(DriveSessionRequest {
        session_uuid: uuid.into(),
        ..Default::default()
    })
}

fn egomotion(uuid: &str, t_us: u64, pose: Pose3) -> Request<RolloutEgoTrajectory> {
    Request::new(RolloutEgoTrajectory {
        session_uuid: uuid.into(),
        trajectory: Some(common::Trajectory {
            poses: vec![common::PoseAtTime {
                pose: Some(pose.to_proto()),
                timestamp_us: t_us,
            }],
        }),
        dynamic_states: vec![],
    })
}

fn drive(uuid: &str, t_us: u64) -> Request<DriveRequest> {
    Request::new(DriveRequest {
        session_uuid: uuid.into(),
        time_now_us: t_us,
        time_query_us: t_us + 100_000,
        ..Default::default()
    })
}

#[test]
fn a_session_is_answered_with_the_plan_in_the_local_frame() {
    with_service(async |s| {
        let v = s.get_version(Request::new(common::Empty {})).await.unwrap();
        assert_eq!(
            v.metadata()
                .get("carla-driver-interface-contract")
                .map(|m| m.to_str().unwrap()),
            Some("2")
        );
        let api = v.into_inner().grpc_api_version.unwrap();
        assert_eq!((api.major, api.minor, api.patch), (0, 55, 0));

        s.start_session(start("a")).await.unwrap();
        // Before any egomotion: the empty trajectory ("hold").
        let hold = s.drive(drive("a", 0)).await.unwrap().into_inner();
        assert!(hold.trajectory.is_none_or(|t| t.poses.is_empty()));

        // The rig at (100, 50) facing +y; the route along its heading.
        let anchor = Pose3::planar(100.0, 50.0, std::f64::consts::FRAC_PI_2);
        s.submit_egomotion_observation(egomotion("a", 1_000_000, anchor))
            .await
            .unwrap();
        s.submit_route(Request::new(RouteRequest {
            session_uuid: "a".into(),
            route: Some(Route {
                timestamp_us: 1_000_000,
                waypoints: (0..50)
                    .map(|i| common::Vec3 {
                        x: 2.0 * i as f32,
                        y: 0.0,
                        z: 0.0,
                    })
                    .collect(),
            }),
        }))
        .await
        .unwrap();
        s.submit_image_observation(Request::new(RolloutCameraImage {
            session_uuid: "a".into(),
            camera_image: None,
        }))
        .await
        .unwrap();
        let answer = s.drive(drive("a", 1_000_000)).await.unwrap().into_inner();
        let poses = answer.trajectory.unwrap().poses;
        assert_eq!(poses.len(), 11);
        for (j, p) in poses.iter().enumerate() {
            let pose = Pose3::from_proto(p.pose.as_ref(), "pose").unwrap();
            // The rear axle j metres up the +y axis from (100, 50), every 0.2 s.
            assert_eq!(p.timestamp_us, 1_000_000 + 200_000 * j as u64);
            assert!((pose.position[0] - 100.0).abs() < 1e-4, "{j}: {pose:?}");
            assert!(
                (pose.position[1] - (50.0 + j as f64)).abs() < 1e-4,
                "{j}: {pose:?}"
            );
            assert!((pose.yaw() - std::f64::consts::FRAC_PI_2).abs() < 1e-6);
        }
        s.close_session(Request::new(DriveSessionCloseRequest {
            session_uuid: "a".into(),
        }))
        .await
        .unwrap();
        let gone = s.drive(drive("a", 2_000_000)).await.unwrap_err();
        assert_eq!(gone.code(), Code::NotFound);
    });
}

#[test]
fn malformed_requests_get_statuses_that_name_the_problem() {
    with_service(async |s| {
        let e = s.start_session(start("")).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains("session_uuid"), "{e:?}");

        s.start_session(start("b")).await.unwrap();
        let e = s.start_session(start("b")).await.unwrap_err();
        assert_eq!(e.code(), Code::AlreadyExists);

        let e = s.drive(drive("nobody", 0)).await.unwrap_err();
        assert_eq!(e.code(), Code::NotFound);
        assert!(e.message().contains("nobody") && e.message().contains("start_session"));

        let mut nan = Pose3::IDENTITY;
        nan.position[1] = f64::NAN;
        let e = s
            .submit_egomotion_observation(egomotion("b", 0, nan))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(
            e.message().contains("trajectory.poses[0].pose.vec.y"),
            "{e:?}"
        );

        let e = s
            .submit_route(Request::new(RouteRequest {
                session_uuid: "b".into(),
                route: Some(Route {
                    timestamp_us: 0,
                    waypoints: vec![common::Vec3 {
                        x: 1.0,
                        y: f32::INFINITY,
                        z: 0.0,
                    }],
                }),
            }))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains("route.waypoints[0].y"), "{e:?}");

        // A planner that fails: INTERNAL, with its message.
        s.submit_egomotion_observation(egomotion("b", 0, Pose3::IDENTITY))
            .await
            .unwrap();
        s.submit_route(Request::new(RouteRequest {
            session_uuid: "b".into(),
            route: Some(Route {
                timestamp_us: 0,
                waypoints: vec![
                    common::Vec3 {
                        x: 0.0,
                        y: -10.0,
                        z: 0.0,
                    },
                    common::Vec3 {
                        x: 50.0,
                        y: -10.0,
                        z: 0.0,
                    },
                ],
            }),
        }))
        .await
        .unwrap();
        let e = s.drive(drive("b", 0)).await.unwrap_err();
        assert_eq!(e.code(), Code::Internal);
        assert!(e.message().contains("far off the route"), "{e:?}");
    });
}
