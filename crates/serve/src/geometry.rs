//! The contract's poses as values: checked on the way in (finite, a usable quaternion), composed
//! in 3D, and seen from above where deltaplan plans (x, y and yaw).
//!
//! Frames, as alpasim defines them: `local` is the runtime's fixed world frame; `rig` is the
//! vehicle's, origin on the ground below the rear axle, x forward, y left, z up (right-handed).
//! deltaplan's vehicle model also has its reference point at the rear axle, so a rig pose is a
//! deltaplan ego pose; its observation and plans use the box centre, `rear_to_center` metres
//! ahead of it.

use deltaplan_sim::geom::Vec2;

use crate::pb::common;

/// A field of a request that deltaplan cannot use; the message names it.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FieldError {
    #[error("{field} is missing")]
    Missing { field: String },
    #[error("{field} is not finite ({value})")]
    NonFinite { field: String, value: f64 },
    #[error("{field}: {why}")]
    Invalid { field: String, why: String },
}

/// A rigid transform: where a frame is and how it is turned.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pose3 {
    pub position: [f64; 3],
    /// Unit quaternion (w, x, y, z).
    pub rotation: [f64; 4],
}

impl Pose3 {
    pub const IDENTITY: Pose3 = Pose3 {
        position: [0.0; 3],
        rotation: [1.0, 0.0, 0.0, 0.0],
    };

    /// The pose of a contract message, checked: every number finite. A zero quaternion (an
    /// unset `quat`) is the identity, as alpasim's own tools read it; any other is normalised.
    pub fn from_proto(pose: Option<&common::Pose>, field: &str) -> Result<Pose3, FieldError> {
        let pose = pose.ok_or_else(|| FieldError::Missing {
            field: field.to_string(),
        })?;
        let v = pose.vec.unwrap_or_default();
        let q = pose.quat.unwrap_or_default();
        let position = [v.x, v.y, v.z].map(f64::from);
        let rotation = [q.w, q.x, q.y, q.z].map(f64::from);
        for (name, value) in ["vec.x", "vec.y", "vec.z"].iter().zip(position) {
            finite(value, &format!("{field}.{name}"))?;
        }
        for (name, value) in ["quat.w", "quat.x", "quat.y", "quat.z"]
            .iter()
            .zip(rotation)
        {
            finite(value, &format!("{field}.{name}"))?;
        }
        let norm = rotation.iter().map(|c| c * c).sum::<f64>().sqrt();
        let rotation = if norm < 1e-12 {
            Pose3::IDENTITY.rotation
        } else {
            rotation.map(|c| c / norm)
        };
        Ok(Pose3 { position, rotation })
    }

    /// A pose in the ground plane: at (x, y, 0), turned by `yaw` about z.
    pub fn planar(x: f64, y: f64, yaw: f64) -> Pose3 {
        let (s, c) = (0.5 * yaw).sin_cos();
        Pose3 {
            position: [x, y, 0.0],
            rotation: [c, 0.0, 0.0, s],
        }
    }

    /// Rotation about z, radians (the heading seen from above).
    pub fn yaw(&self) -> f64 {
        let [w, x, y, z] = self.rotation;
        (2.0 * (w * z + x * y)).atan2(1.0 - 2.0 * (y * y + z * z))
    }

    /// `self` then `other`: `other` given in `self`'s frame, the result in `self`'s parent frame
    /// (a rig-frame pose lifted into `local` by the rig's own pose).
    pub fn compose(&self, other: &Pose3) -> Pose3 {
        let moved = rotate(self.rotation, other.position);
        Pose3 {
            position: [
                self.position[0] + moved[0],
                self.position[1] + moved[1],
                self.position[2] + moved[2],
            ],
            rotation: quat_mul(self.rotation, other.rotation),
        }
    }

    /// `point` (in the parent frame, seen from above) in this pose's planar frame: x along
    /// the heading, y to its left.
    pub fn planar_point_in_frame(&self, point: [f64; 2]) -> [f64; 2] {
        let (s, c) = self.yaw().sin_cos();
        let dx = point[0] - self.position[0];
        let dy = point[1] - self.position[1];
        [c * dx + s * dy, -s * dx + c * dy]
    }

    /// `point` given in this pose's planar frame, in the parent frame (seen from above).
    pub fn planar_point_from_frame(&self, point: [f64; 2]) -> [f64; 2] {
        let (s, c) = self.yaw().sin_cos();
        [
            self.position[0] + c * point[0] - s * point[1],
            self.position[1] + s * point[0] + c * point[1],
        ]
    }

    /// The contract's message (single precision on the wire).
    pub fn to_proto(self) -> common::Pose {
        let [x, y, z] = self.position.map(|c| c as f32);
        let [w, qx, qy, qz] = self.rotation.map(|c| c as f32);
        common::Pose {
            vec: Some(common::Vec3 { x, y, z }),
            quat: Some(common::Quat {
                w,
                x: qx,
                y: qy,
                z: qz,
            }),
        }
    }
}

/// A contract vector as a point seen from above, checked finite.
pub fn planar_vec3(v: &common::Vec3, field: &str) -> Result<[f64; 2], FieldError> {
    let x = finite(f64::from(v.x), &format!("{field}.x"))?;
    let y = finite(f64::from(v.y), &format!("{field}.y"))?;
    finite(f64::from(v.z), &format!("{field}.z"))?;
    Ok([x, y])
}

/// `value`, or the error naming `field`.
pub fn finite(value: f64, field: &str) -> Result<f64, FieldError> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(FieldError::NonFinite {
            field: field.to_string(),
            value,
        })
    }
}

/// A planar point in deltaplan's single precision.
pub fn vec2(p: [f64; 2]) -> Vec2 {
    Vec2::new(p[0] as f32, p[1] as f32)
}

fn quat_mul(a: [f64; 4], b: [f64; 4]) -> [f64; 4] {
    let [aw, ax, ay, az] = a;
    let [bw, bx, by, bz] = b;
    [
        aw * bw - ax * bx - ay * by - az * bz,
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
    ]
}

fn rotate(q: [f64; 4], v: [f64; 3]) -> [f64; 3] {
    let p = quat_mul(
        quat_mul(q, [0.0, v[0], v[1], v[2]]),
        [q[0], -q[1], -q[2], -q[3]],
    );
    [p[1], p[2], p[3]]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn a_planar_pose_has_its_yaw_and_composes_like_a_2d_transform() {
        let anchor = Pose3::planar(10.0, 5.0, std::f64::consts::FRAC_PI_2);
        assert!(close(anchor.yaw(), std::f64::consts::FRAC_PI_2));
        // 2 m ahead and 1 m left of a vehicle facing +y: (10 - 1, 5 + 2).
        let p = anchor.compose(&Pose3::planar(2.0, 1.0, 0.25));
        assert!(
            close(p.position[0], 9.0) && close(p.position[1], 7.0),
            "{p:?}"
        );
        assert!(close(p.yaw(), std::f64::consts::FRAC_PI_2 + 0.25));
        let back = anchor.planar_point_in_frame([9.0, 7.0]);
        assert!(close(back[0], 2.0) && close(back[1], 1.0), "{back:?}");
        let there = anchor.planar_point_from_frame([2.0, 1.0]);
        assert!(close(there[0], 9.0) && close(there[1], 7.0), "{there:?}");
    }

    #[test]
    fn a_pitched_anchor_keeps_its_pitch_and_height_in_composed_poses() {
        // Pitched 0.1 rad nose-down about y, 3 m up: a point 10 m ahead in the rig drops
        // 10 sin(0.1) and is 10 cos(0.1) ahead.
        let (s, c) = (0.05f64).sin_cos();
        let anchor = Pose3 {
            position: [0.0, 0.0, 3.0],
            rotation: [c, 0.0, s, 0.0],
        };
        let p = anchor.compose(&Pose3::planar(10.0, 0.0, 0.0));
        assert!(close(p.position[0], 10.0 * 0.1f64.cos()), "{p:?}");
        assert!(close(p.position[2], 3.0 - 10.0 * 0.1f64.sin()), "{p:?}");
        assert_eq!(p.rotation, anchor.rotation);
    }

    #[test]
    fn unset_quaternions_are_the_identity_and_non_finite_fields_are_named() {
        let pose = common::Pose {
            vec: Some(common::Vec3 {
                x: 1.0,
                y: 2.0,
                z: 0.0,
            }),
            quat: None,
        };
        let p = Pose3::from_proto(Some(&pose), "trajectory.poses[0].pose").unwrap();
        assert_eq!(p.rotation, Pose3::IDENTITY.rotation);
        let bad = common::Pose {
            vec: Some(common::Vec3 {
                x: f32::NAN,
                y: 0.0,
                z: 0.0,
            }),
            quat: None,
        };
        let e = Pose3::from_proto(Some(&bad), "trajectory.poses[3].pose").unwrap_err();
        assert_eq!(
            e.to_string(),
            "trajectory.poses[3].pose.vec.x is not finite (NaN)"
        );
        let e = Pose3::from_proto(None, "trajectory.poses[0].pose").unwrap_err();
        assert_eq!(e.to_string(), "trajectory.poses[0].pose is missing");
    }
}
