//! One rollout's state, kept between the contract's calls: the ego's pose history (rig poses
//! in `local`, with the dynamic state the runtime sent beside each) and the latest route.
//! From them, what a drive call needs: the ego's motion now and the route in its rig frame.

use std::collections::VecDeque;

use deltaplan_sim::geom::Vec2;

use crate::geometry::{finite, planar_vec3, vec2, FieldError, Pose3};
use crate::observation::EgoMotion;
use crate::pb::{common, egodriver};

/// Poses kept per session: enough to difference the latest two and to find the pose a
/// route was given in.
const HISTORY: usize = 64;

/// One ego pose the runtime reported.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EgoSample {
    pub timestamp_us: u64,
    pub pose: Pose3,
    pub motion: EgoMotion,
}

/// The latest route: waypoints in the rig frame of the pose at `timestamp_us`, seen from above.
#[derive(Clone, Debug, PartialEq)]
pub struct RouteSample {
    pub timestamp_us: u64,
    pub waypoints_in_rig: Vec<[f64; 2]>,
}

/// A rollout's state.
#[derive(Debug, Default)]
pub struct Session {
    pub history: VecDeque<EgoSample>,
    pub route: Option<RouteSample>,
    pub drives: u64,
    /// Seconds spent answering drive calls (observation, planning, answer).
    pub drive_seconds: f64,
    /// Whether the straight-ahead route was already reported for this session.
    pub warned_no_route: bool,
}

impl Session {
    /// Adds the poses of an egomotion observation. Dynamic states, when sent, come one per
    /// pose (alpasim's rule). A pose at or before the latest known time is skipped: runtimes
    /// resend the pose at the step boundary. Speed, acceleration and yaw rate come from the
    /// dynamic state where the runtime sent them, else from the difference to the pose before
    /// (0 for a first pose).
    pub fn add_egomotion(
        &mut self,
        request: &egodriver::RolloutEgoTrajectory,
    ) -> Result<usize, FieldError> {
        let poses = request
            .trajectory
            .as_ref()
            .map_or(&[][..], |t| t.poses.as_slice());
        let states = &request.dynamic_states;
        if !states.is_empty() && states.len() != poses.len() {
            return Err(FieldError::Invalid {
                field: "dynamic_states".into(),
                why: format!(
                    "{} sent for {} poses (one per pose, or none)",
                    states.len(),
                    poses.len()
                ),
            });
        }
        // Everything checked before anything is kept: a bad request changes nothing.
        let mut checked = Vec::with_capacity(poses.len());
        for (i, p) in poses.iter().enumerate() {
            let pose = Pose3::from_proto(p.pose.as_ref(), &format!("trajectory.poses[{i}].pose"))?;
            let state = match states.get(i) {
                Some(s) => Some(DynamicMotion::from_proto(s, i)?),
                None => None,
            };
            checked.push((p.timestamp_us, pose, state));
        }
        let mut added = 0;
        for (timestamp_us, pose, state) in checked {
            let previous = self.history.back().copied();
            if previous.is_some_and(|p| timestamp_us <= p.timestamp_us) {
                continue;
            }
            let motion = estimate_motion(previous.as_ref(), timestamp_us, &pose, state);
            if self.history.len() == HISTORY {
                self.history.pop_front();
            }
            self.history.push_back(EgoSample {
                timestamp_us,
                pose,
                motion,
            });
            added += 1;
        }
        Ok(added)
    }

    /// Keeps the route of a route request (checked finite).
    pub fn set_route(&mut self, route: Option<&egodriver::Route>) -> Result<(), FieldError> {
        let Some(route) = route else {
            self.route = None;
            return Ok(());
        };
        let waypoints_in_rig = route
            .waypoints
            .iter()
            .enumerate()
            .map(|(i, w)| planar_vec3(w, &format!("route.waypoints[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        self.route = Some(RouteSample {
            timestamp_us: route.timestamp_us,
            waypoints_in_rig,
        });
        Ok(())
    }

    /// The latest pose, if any arrived.
    pub fn latest(&self) -> Option<&EgoSample> {
        self.history.back()
    }

    /// The route in the rig frame of the latest pose: lifted into `local` by the pose nearest
    /// in time to the route's timestamp (the pose it was given in), then seen from the latest.
    /// Empty without a route or a pose.
    pub fn route_in_latest_rig(&self) -> Vec<Vec2> {
        let (Some(route), Some(latest)) = (&self.route, self.latest()) else {
            return Vec::new();
        };
        let given_in = self
            .history
            .iter()
            .min_by_key(|s| s.timestamp_us.abs_diff(route.timestamp_us))
            .map_or(latest.pose, |s| s.pose);
        route
            .waypoints_in_rig
            .iter()
            .map(|&w| {
                let local = given_in.planar_point_from_frame(w);
                vec2(latest.pose.planar_point_in_frame(local))
            })
            .collect()
    }
}

/// The parts of a contract `DynamicState` deltaplan reads (rig frame), each only if sent.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct DynamicMotion {
    forward_speed: Option<f64>,
    forward_accel: Option<f64>,
    yaw_rate: Option<f64>,
}

impl DynamicMotion {
    fn from_proto(s: &common::DynamicState, i: usize) -> Result<Self, FieldError> {
        let field = |name: &str| format!("dynamic_states[{i}].{name}");
        let x = |v: &Option<common::Vec3>, name: &str| -> Result<Option<f64>, FieldError> {
            v.as_ref()
                .map(|v| finite(f64::from(v.x), &field(&format!("{name}.x"))))
                .transpose()
        };
        Ok(DynamicMotion {
            forward_speed: x(&s.linear_velocity, "linear_velocity")?,
            forward_accel: x(&s.linear_acceleration, "linear_acceleration")?,
            yaw_rate: s
                .angular_velocity
                .as_ref()
                .map(|v| finite(f64::from(v.z), &field("angular_velocity.z")))
                .transpose()?,
        })
    }
}

/// The motion at `pose` (time `t_us`): what the runtime sent, else differences to `previous`.
fn estimate_motion(
    previous: Option<&EgoSample>,
    t_us: u64,
    pose: &Pose3,
    sent: Option<DynamicMotion>,
) -> EgoMotion {
    let sent = sent.unwrap_or_default();
    let dt = previous.map(|p| (t_us - p.timestamp_us) as f64 * 1e-6);
    let differenced_speed = previous.zip(dt).map(|(p, dt)| {
        // Displacement along the new heading: forward progress.
        let moved = pose.planar_point_in_frame([p.pose.position[0], p.pose.position[1]]);
        -moved[0] / dt
    });
    let speed = sent
        .forward_speed
        .or(differenced_speed)
        .unwrap_or(0.0)
        .max(0.0);
    let accel = sent.forward_accel.unwrap_or_else(|| {
        previous
            .zip(dt)
            .map_or(0.0, |(p, dt)| (speed - f64::from(p.motion.speed)) / dt)
    });
    let yaw_rate = sent.yaw_rate.unwrap_or_else(|| {
        previous.zip(dt).map_or(0.0, |(p, dt)| {
            deltaplan_sim::geom::wrap_angle((pose.yaw() - p.pose.yaw()) as f32) as f64 / dt
        })
    });
    EgoMotion {
        speed: speed as f32,
        accel: accel as f32,
        yaw_rate: yaw_rate as f32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pose_at(t_us: u64, x: f64, y: f64, yaw: f64) -> common::PoseAtTime {
        common::PoseAtTime {
            pose: Some(Pose3::planar(x, y, yaw).to_proto()),
            timestamp_us: t_us,
        }
    }

    fn egomotion(
        poses: Vec<common::PoseAtTime>,
        states: Vec<common::DynamicState>,
    ) -> egodriver::RolloutEgoTrajectory {
        egodriver::RolloutEgoTrajectory {
            session_uuid: "s".into(),
            trajectory: Some(common::Trajectory { poses }),
            dynamic_states: states,
        }
    }

    fn close(a: f32, b: f32) -> bool {
        (a - b).abs() < 1e-4
    }

    #[test]
    fn motion_is_differenced_from_poses_when_no_dynamic_state_is_sent() {
        let mut s = Session::default();
        // Heading +y; 1 m in 0.1 s, then 1.2 m in 0.1 s turning 0.05 rad.
        let yaw = std::f64::consts::FRAC_PI_2;
        s.add_egomotion(&egomotion(vec![pose_at(0, 0.0, 0.0, yaw)], vec![]))
            .unwrap();
        assert_eq!(s.latest().unwrap().motion, EgoMotion::default());
        s.add_egomotion(&egomotion(vec![pose_at(100_000, 0.0, 1.0, yaw)], vec![]))
            .unwrap();
        let m = s.latest().unwrap().motion;
        assert!(close(m.speed, 10.0) && close(m.accel, 100.0) && close(m.yaw_rate, 0.0));
        s.add_egomotion(&egomotion(
            vec![pose_at(200_000, 0.0, 2.2, yaw + 0.05)],
            vec![],
        ))
        .unwrap();
        let m = s.latest().unwrap().motion;
        // Forward progress along the new heading: 1.2 cos(0.05) / 0.1.
        assert!(close(m.speed, (12.0 * 0.05f64.cos()) as f32), "{m:?}");
        assert!(close(m.yaw_rate, 0.5), "{m:?}");
        assert!(
            close(m.accel, (12.0 * 0.05f64.cos() - 10.0) as f32 * 10.0),
            "{m:?}"
        );
    }

    #[test]
    fn a_sent_dynamic_state_wins_and_resent_or_older_poses_are_skipped() {
        let mut s = Session::default();
        let state = common::DynamicState {
            linear_velocity: Some(common::Vec3 {
                x: 7.0,
                y: 0.0,
                z: 0.0,
            }),
            angular_velocity: Some(common::Vec3 {
                x: 0.0,
                y: 0.0,
                z: -0.2,
            }),
            ..Default::default()
        };
        let added = s
            .add_egomotion(&egomotion(
                vec![pose_at(0, 0.0, 0.0, 0.0), pose_at(100_000, 0.5, 0.0, 0.0)],
                vec![state, state],
            ))
            .unwrap();
        assert_eq!(added, 2);
        let m = s.latest().unwrap().motion;
        assert!(close(m.speed, 7.0) && close(m.yaw_rate, -0.2) && close(m.accel, 0.0));
        let added = s
            .add_egomotion(&egomotion(vec![pose_at(100_000, 9.0, 9.0, 0.0)], vec![]))
            .unwrap();
        assert_eq!(added, 0);
        assert_eq!(s.history.len(), 2);
    }

    #[test]
    fn malformed_egomotion_is_refused_naming_the_field_and_changes_nothing() {
        let mut s = Session::default();
        let mut bad = pose_at(0, 0.0, 0.0, 0.0);
        bad.pose.as_mut().unwrap().quat.as_mut().unwrap().z = f32::INFINITY;
        let e = s
            .add_egomotion(&egomotion(vec![pose_at(0, 0.0, 0.0, 0.0), bad], vec![]))
            .unwrap_err();
        assert!(
            e.to_string().contains("trajectory.poses[1].pose.quat.z"),
            "{e}"
        );
        assert!(s.history.is_empty());
        let e = s
            .add_egomotion(&egomotion(
                vec![pose_at(0, 0.0, 0.0, 0.0)],
                vec![Default::default(), Default::default()],
            ))
            .unwrap_err();
        assert!(e.to_string().contains("2 sent for 1 poses"), "{e}");
    }

    #[test]
    fn a_route_given_in_an_earlier_rig_is_seen_from_the_latest() {
        let mut s = Session::default();
        s.add_egomotion(&egomotion(
            vec![
                pose_at(0, 0.0, 0.0, 0.0),
                pose_at(100_000, 1.0, 0.0, std::f64::consts::FRAC_PI_2),
            ],
            vec![],
        ))
        .unwrap();
        // Given at t = 0 (rig at the origin facing +x): the point (5, 0) is local (5, 0).
        s.set_route(Some(&egodriver::Route {
            timestamp_us: 0,
            waypoints: vec![common::Vec3 {
                x: 5.0,
                y: 0.0,
                z: 0.0,
            }],
        }))
        .unwrap();
        // Seen from (1, 0) facing +y: 4 m to the right.
        let r = s.route_in_latest_rig();
        assert!(close(r[0].x, 0.0) && close(r[0].y, -4.0), "{r:?}");
    }
}
