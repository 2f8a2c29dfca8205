//! A deltaplan plan as the contract's answer: the trajectory of the rig in the `local` frame,
//! led by the ego's pose now, then one pose per waypoint, as alpasim's own driver answers.
//!
//! A plan is H points 0.2 s apart (waypoint j at `(j + 1) * waypoint_dt`) where the box centre
//! should be, in the ego frame (origin at the box centre, x forward, y left, metres). The rig's
//! origin is the rear axle, `rear_to_center` behind the centre along the heading, and the
//! heading at a waypoint is the plan's direction there (the chord from the point before to the
//! point after; the current pose's heading where the plan barely moves).

use crate::geometry::Pose3;
use crate::pb::common;

/// Below this chord length (metres) the plan's direction is not taken from it.
const MIN_CHORD_M: f64 = 0.05;

/// The contract's trajectory for `plan` (`[x0, y0, x1, y1, ...]`, box-centre ego frame),
/// planned from the rig pose `anchor` (in `local`) at `time_now_us`.
pub fn trajectory(
    plan: &[f32],
    anchor: &Pose3,
    time_now_us: u64,
    waypoint_dt: f32,
    rear_to_center: f32,
) -> common::Trajectory {
    let r = f64::from(rear_to_center);
    // Box centres in the rig frame, the current one first.
    let centres: Vec<[f64; 2]> = std::iter::once([r, 0.0])
        .chain(
            plan.chunks_exact(2)
                .map(|w| [f64::from(w[0]) + r, f64::from(w[1])]),
        )
        .collect();
    let mut poses = Vec::with_capacity(centres.len());
    poses.push(common::PoseAtTime {
        pose: Some(anchor.to_proto()),
        timestamp_us: time_now_us,
    });
    let mut yaw = 0.0f64;
    for j in 1..centres.len() {
        let before = centres[j - 1];
        let after = centres[(j + 1).min(centres.len() - 1)];
        let chord = [after[0] - before[0], after[1] - before[1]];
        if chord[0].hypot(chord[1]) >= MIN_CHORD_M {
            yaw = chord[1].atan2(chord[0]);
        }
        let c = centres[j];
        let rear = Pose3::planar(c[0] - r * yaw.cos(), c[1] - r * yaw.sin(), yaw);
        let offset_us = (j as f64 * f64::from(waypoint_dt) * 1e6).round() as u64;
        poses.push(common::PoseAtTime {
            pose: Some(anchor.compose(&rear).to_proto()),
            timestamp_us: time_now_us + offset_us,
        });
    }
    common::Trajectory { poses }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planar(p: &common::PoseAtTime) -> (f64, f64, f64, u64) {
        let pose = Pose3::from_proto(p.pose.as_ref(), "pose").unwrap();
        (
            pose.position[0],
            pose.position[1],
            pose.yaw(),
            p.timestamp_us,
        )
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-5
    }

    #[test]
    fn a_straight_plan_from_a_turned_anchor_lands_where_computed_by_hand() {
        // Centre 2 m further every 0.2 s; the vehicle at (10, 5) facing +y (90 degrees).
        let plan: Vec<f32> = (1..=10).flat_map(|j| [2.0 * j as f32, 0.0]).collect();
        let anchor = Pose3::planar(10.0, 5.0, std::f64::consts::FRAC_PI_2);
        let t = trajectory(&plan, &anchor, 1_000_000, 0.2, 1.4);
        assert_eq!(t.poses.len(), 11);
        assert_eq!(
            planar(&t.poses[0]),
            (10.0, 5.0, planar(&t.poses[0]).2, 1_000_000)
        );
        for j in 1..=10 {
            let (x, y, yaw, ts) = planar(&t.poses[j]);
            // The rear axle 2j m ahead of where it was: (10, 5 + 2j).
            assert!(
                close(x, 10.0) && close(y, 5.0 + 2.0 * j as f64),
                "{j}: {x} {y}"
            );
            assert!(close(yaw, std::f64::consts::FRAC_PI_2), "{j}: {yaw}");
            assert_eq!(ts, 1_000_000 + 200_000 * j as u64);
        }
    }

    #[test]
    fn a_plan_on_a_circle_is_answered_with_rear_axles_behind_centres_along_the_tangent() {
        // Centres on a circle of radius 10 about (0, 10) in the ego frame, 0.1 rad apart;
        // the vehicle at the local origin facing +x.
        let radius = 10.0f64;
        let centre_at = |a: f64| [radius * a.sin(), radius * (1.0 - a.cos())];
        let plan: Vec<f32> = (1..=10)
            .flat_map(|j| centre_at(0.1 * j as f64).map(|v| v as f32))
            .collect();
        let t = trajectory(&plan, &Pose3::IDENTITY, 0, 0.2, 1.4);
        for j in 1..=9 {
            let (x, y, yaw, _) = planar(&t.poses[j]);
            // The chord between neighbours is parallel to the tangent at the middle point.
            let a = 0.1 * j as f64;
            assert!((yaw - a).abs() < 1e-6, "{j}: yaw {yaw} vs {a}");
            let [cx, cy] = centre_at(a);
            assert!(close(x, cx + 1.4 - 1.4 * a.cos()), "{j}: x {x}");
            assert!(close(y, cy - 1.4 * a.sin()), "{j}: y {y}");
        }
    }

    #[test]
    fn a_standing_plan_keeps_the_heading() {
        let plan = vec![0.0f32; 20];
        let anchor = Pose3::planar(3.0, -2.0, 0.7);
        let t = trajectory(&plan, &anchor, 5, 0.2, 1.4);
        for p in &t.poses[1..] {
            let (x, y, yaw, _) = planar(p);
            assert!(
                close(x, 3.0) && close(y, -2.0) && close(yaw, 0.7),
                "{x} {y} {yaw}"
            );
        }
    }
}
