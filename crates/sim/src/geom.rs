//! Plane geometry: vectors, poses, oriented boxes and the separating-axis test.

use serde::{Deserialize, Serialize};

/// A point or vector in the world plane, metres.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Vec2 {
    pub x: f32,
    pub y: f32,
}

impl Vec2 {
    pub const ZERO: Vec2 = Vec2 { x: 0.0, y: 0.0 };
    #[inline]
    pub const fn new(x: f32, y: f32) -> Self {
        Vec2 { x, y }
    }
    /// Unit vector at angle `a` (radians, counter-clockwise from +x).
    #[inline]
    pub fn from_angle(a: f32) -> Self {
        let (s, c) = a.sin_cos();
        Vec2 { x: c, y: s }
    }
    #[inline]
    pub fn dot(self, o: Vec2) -> f32 {
        self.x * o.x + self.y * o.y
    }
    /// z-component of the 3-D cross product: positive when `o` is to the left of `self`.
    #[inline]
    pub fn cross(self, o: Vec2) -> f32 {
        self.x * o.y - self.y * o.x
    }
    #[inline]
    pub fn norm(self) -> f32 {
        self.dot(self).sqrt()
    }
    #[inline]
    pub fn norm_sq(self) -> f32 {
        self.dot(self)
    }
    /// Rotated +90 degrees (the left normal of a direction).
    #[inline]
    pub fn perp(self) -> Vec2 {
        Vec2::new(-self.y, self.x)
    }
    #[inline]
    pub fn lerp(self, o: Vec2, t: f32) -> Vec2 {
        self + (o - self) * t
    }
    /// Expresses a world point in the frame of `pose` (x forward, y left).
    #[inline]
    pub fn to_frame(self, origin: Vec2, heading: Vec2) -> Vec2 {
        let d = self - origin;
        Vec2::new(d.dot(heading), heading.cross(d))
    }
    /// Inverse of [`Vec2::to_frame`].
    #[inline]
    pub fn from_frame(self, origin: Vec2, heading: Vec2) -> Vec2 {
        origin + heading * self.x + heading.perp() * self.y
    }
}

impl std::ops::Add for Vec2 {
    type Output = Vec2;
    #[inline]
    fn add(self, o: Vec2) -> Vec2 {
        Vec2::new(self.x + o.x, self.y + o.y)
    }
}
impl std::ops::Sub for Vec2 {
    type Output = Vec2;
    #[inline]
    fn sub(self, o: Vec2) -> Vec2 {
        Vec2::new(self.x - o.x, self.y - o.y)
    }
}
impl std::ops::Mul<f32> for Vec2 {
    type Output = Vec2;
    #[inline]
    fn mul(self, k: f32) -> Vec2 {
        Vec2::new(self.x * k, self.y * k)
    }
}
impl std::ops::Neg for Vec2 {
    type Output = Vec2;
    #[inline]
    fn neg(self) -> Vec2 {
        Vec2::new(-self.x, -self.y)
    }
}

/// Wraps an angle to (-pi, pi].
#[inline]
pub fn wrap_angle(a: f32) -> f32 {
    let mut a = a % std::f32::consts::TAU;
    if a > std::f32::consts::PI {
        a -= std::f32::consts::TAU;
    } else if a <= -std::f32::consts::PI {
        a += std::f32::consts::TAU;
    }
    a
}

/// A rectangle of `length` x `width` centred at `center`, long axis along `heading` (unit).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OrientedBox {
    pub center: Vec2,
    pub heading: Vec2,
    pub half_length: f32,
    pub half_width: f32,
}

impl OrientedBox {
    pub fn new(center: Vec2, yaw: f32, length: f32, width: f32) -> Self {
        OrientedBox {
            center,
            heading: Vec2::from_angle(yaw),
            half_length: 0.5 * length,
            half_width: 0.5 * width,
        }
    }

    /// Corners in counter-clockwise order starting front-left.
    pub fn corners(&self) -> [Vec2; 4] {
        let f = self.heading * self.half_length;
        let l = self.heading.perp() * self.half_width;
        let c = self.center;
        [c + f + l, c - f + l, c - f - l, c + f - l]
    }

    /// Radius of the circumscribed circle, for the broad phase.
    #[inline]
    pub fn radius(&self) -> f32 {
        (self.half_length * self.half_length + self.half_width * self.half_width).sqrt()
    }

    /// Half-extent of the box projected on unit axis `axis`.
    #[inline]
    fn projected_radius(&self, axis: Vec2) -> f32 {
        self.half_length * self.heading.dot(axis).abs()
            + self.half_width * self.heading.perp().dot(axis).abs()
    }

    /// Separating-axis test for two rectangles: they overlap unless one of the four face normals
    /// separates them. Boxes that only touch (zero-area contact) count as overlapping, so a
    /// grazing contact is still a collision.
    pub fn overlaps(&self, other: &OrientedBox) -> bool {
        let d = other.center - self.center;
        let r = self.radius() + other.radius();
        if d.norm_sq() > r * r {
            return false;
        }
        let axes = [
            self.heading,
            self.heading.perp(),
            other.heading,
            other.heading.perp(),
        ];
        axes.iter().all(|&axis| {
            d.dot(axis).abs() <= self.projected_radius(axis) + other.projected_radius(axis)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f32::consts::FRAC_PI_4;

    #[test]
    fn frame_round_trip_and_axes() {
        let origin = Vec2::new(3.0, -2.0);
        let heading = Vec2::from_angle(std::f32::consts::FRAC_PI_2);
        // A point 1 m to the north of the origin is 1 m straight ahead when heading north.
        let p = Vec2::new(3.0, -1.0).to_frame(origin, heading);
        assert!((p.x - 1.0).abs() < 1e-6 && p.y.abs() < 1e-6);
        // A point to the west is on the left.
        let q = Vec2::new(2.0, -2.0).to_frame(origin, heading);
        assert!(q.x.abs() < 1e-6 && (q.y - 1.0).abs() < 1e-6);
        let back = q.from_frame(origin, heading);
        assert!((back - Vec2::new(2.0, -2.0)).norm() < 1e-6);
    }

    #[test]
    fn wrap_angle_range() {
        assert!((wrap_angle(3.0 * std::f32::consts::PI) - std::f32::consts::PI).abs() < 1e-5);
        assert!((wrap_angle(-0.5) + 0.5).abs() < 1e-7);
        assert!((wrap_angle(7.0) - (7.0 - std::f32::consts::TAU)).abs() < 1e-6);
    }

    #[test]
    fn sat_separated_touching_overlapping_axis_aligned() {
        let a = OrientedBox::new(Vec2::ZERO, 0.0, 4.0, 2.0);
        // Exactly touching along x: right face of a at x=2, left face of b at x=2.
        let touching = OrientedBox::new(Vec2::new(4.0, 0.0), 0.0, 4.0, 2.0);
        assert!(a.overlaps(&touching));
        let separated = OrientedBox::new(Vec2::new(4.01, 0.0), 0.0, 4.0, 2.0);
        assert!(!a.overlaps(&separated));
        let overlapping = OrientedBox::new(Vec2::new(3.9, 1.9), 0.0, 4.0, 2.0);
        assert!(a.overlaps(&overlapping));
        let side_separated = OrientedBox::new(Vec2::new(0.0, 2.01), 0.0, 4.0, 2.0);
        assert!(!a.overlaps(&side_separated));
    }

    #[test]
    fn sat_rotated_cases() {
        // A unit square rotated 45 degrees has its corner at distance sqrt(2)/2 from its centre.
        let a = OrientedBox::new(Vec2::ZERO, 0.0, 2.0, 2.0); // faces at x = +-1
        let half_diag = std::f32::consts::SQRT_2 / 2.0;
        let just_out =
            OrientedBox::new(Vec2::new(1.0 + half_diag + 1e-3, 0.0), FRAC_PI_4, 1.0, 1.0);
        assert!(!a.overlaps(&just_out));
        let just_in = OrientedBox::new(Vec2::new(1.0 + half_diag - 1e-3, 0.0), FRAC_PI_4, 1.0, 1.0);
        assert!(a.overlaps(&just_in));
        // Case where the circumscribed circles and the AABBs overlap but a rotated face
        // normal separates: a long thin diagonal box passing near the corner of `a`.
        let diag = OrientedBox::new(Vec2::new(2.0, 2.0), -FRAC_PI_4, 6.0, 0.5);
        // Distance from (1,1) (corner of a) to the line through (2,2) along (1,-1) is sqrt(2)
        // > 0.25 half width: separated, even though the AABBs overlap.
        assert!(!a.overlaps(&diag));
        let diag_close = OrientedBox::new(Vec2::new(1.1, 1.1), -FRAC_PI_4, 6.0, 0.5);
        assert!(a.overlaps(&diag_close));
        // Symmetry.
        assert_eq!(diag.overlaps(&a), a.overlaps(&diag));
        assert_eq!(diag_close.overlaps(&a), a.overlaps(&diag_close));
    }
}
