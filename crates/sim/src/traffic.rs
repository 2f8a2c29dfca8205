//! Traffic: path-following agents driven by the Intelligent Driver Model (IDM), scripted
//! behaviours for the hard-brake and cut-in families, and traffic lights.
//!
//! Agents move along a path's centreline at arc length `s` with a lateral offset `d` (lane
//! changes and cut-ins interpolate `d`); their pose is derived from the path each step. This is
//! the usual model of reactive traffic in planning benchmarks (nuPlan's IDM agents follow
//! their centreline the same way): cheap, smooth and collision-free among themselves.

use crate::geom::Vec2;
use serde::{Deserialize, Serialize};

/// IDM parameters (Treiber et al., 2000).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Idm {
    /// Desired speed, m/s.
    pub v0: f32,
    /// Desired time headway, s.
    pub headway: f32,
    /// Minimum gap, m.
    pub s0: f32,
    /// Maximum acceleration, m/s^2.
    pub a_max: f32,
    /// Comfortable deceleration, m/s^2.
    pub b: f32,
}

impl Idm {
    /// IDM acceleration for speed `v` behind a leader at bumper-to-bumper `gap` moving at
    /// `v_lead` (no leader: `gap = inf`). Clamped at `-b_max`.
    #[inline]
    pub fn accel(&self, v: f32, gap: f32, v_lead: f32, b_max: f32) -> f32 {
        let free = 1.0 - (v / self.v0.max(0.1)).powi(4);
        let a = if gap.is_finite() {
            let s_star = self.s0
                + (v * self.headway + v * (v - v_lead) / (2.0 * (self.a_max * self.b).sqrt()))
                    .max(0.0);
            let g = gap.max(0.1);
            self.a_max * (free - (s_star / g) * (s_star / g))
        } else {
            self.a_max * free
        };
        a.max(-b_max)
    }
}

/// How long before a scripted cut-in the privileged expert knows it is coming, seconds: the
/// lead time a careful human reads from a turn signal.
pub const INTENTION_FORESIGHT: f32 = 1.0;

/// Scripted behaviour layered on IDM.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Behaviour {
    /// Plain IDM lane following.
    Idm,
    /// At time `at` (s), brake at `decel` down to `v_min`, hold for `hold` seconds, then resume.
    HardBrake {
        at: f32,
        decel: f32,
        v_min: f32,
        hold: f32,
    },
    /// At time `at`, move laterally from `d_from` to `d_to` over `duration` seconds.
    CutIn {
        at: f32,
        duration: f32,
        d_from: f32,
        d_to: f32,
    },
}

/// One traffic vehicle.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Agent {
    pub path: u16,
    pub s: f32,
    /// Lateral offset from the path centreline, positive left.
    pub d: f32,
    pub v: f32,
    pub accel: f32,
    pub length: f32,
    pub width: f32,
    pub idm: Idm,
    pub behaviour: Behaviour,
    /// Whether this driver lets the ego merge in front (politeness).
    pub yields_to_ego: bool,
    pub active: bool,
    /// Derived each step: box centre, unit heading.
    pub pos: Vec2,
    pub heading: Vec2,
}

impl Agent {
    /// Lateral offset the agent is heading to: where a privileged planner expects it, from
    /// [`INTENTION_FORESIGHT`] seconds before a cut-in starts.
    pub fn intended_d(&self, t: f32) -> f32 {
        match self.behaviour {
            Behaviour::CutIn { at, d_to, .. } if t >= at - INTENTION_FORESIGHT => d_to,
            _ => self.d,
        }
    }

    /// Acceleration the agent is about to have: a scripted hard brake's deceleration from the
    /// moment it starts (before the step has realised it) until the agent is down to its
    /// target speed; otherwise the acceleration of the last step. No foresight here: a
    /// planner without the privileged view sees a hard brake as the closing speed it makes,
    /// so an expert that braked before it would teach braking for no visible reason.
    pub fn intended_accel(&self, t: f32) -> f32 {
        match self.behaviour {
            Behaviour::HardBrake {
                at,
                decel,
                v_min,
                hold,
            } if t >= at && t < at + hold && self.v > v_min => self.accel.min(-decel),
            _ => self.accel,
        }
    }

    /// Lateral offset prescribed by the behaviour at time `t`.
    pub fn scripted_d(&self, t: f32) -> f32 {
        match self.behaviour {
            Behaviour::CutIn {
                at,
                duration,
                d_from,
                d_to,
            } => {
                let u = ((t - at) / duration).clamp(0.0, 1.0);
                // Smoothstep: zero lateral speed at both ends.
                let w = u * u * (3.0 - 2.0 * u);
                d_from + (d_to - d_from) * w
            }
            _ => self.d,
        }
    }
}

/// Whether a main-road agent lets a merging ego in: polite drivers do once the ego, mapped
/// onto the main road, is clearly ahead of them (`rel` = ego minus agent position, `half` =
/// half the sum of their lengths). The expert uses the same rule, so they never wait on each
/// other.
#[inline]
pub fn agent_yields_at_merge(a: &Agent, rel: f32, half: f32) -> bool {
    a.yields_to_ego && rel > half + 1.0
}

/// Colour of a traffic light.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LightState {
    Green,
    Yellow,
    Red,
}

/// A fixed-time signal: green, then yellow, then red for the rest of the cycle.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrafficLight {
    /// Stop-line centre and the direction of travel through it (for rendering).
    pub pos: Vec2,
    pub heading: Vec2,
    /// Seconds into the cycle at t = 0.
    pub offset: f32,
    pub green: f32,
    pub yellow: f32,
    pub cycle: f32,
}

impl TrafficLight {
    pub fn state(&self, t: f32) -> LightState {
        let phase = (t + self.offset).rem_euclid(self.cycle);
        if phase < self.green {
            LightState::Green
        } else if phase < self.green + self.yellow {
            LightState::Yellow
        } else {
            LightState::Red
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idm_free_road_and_equilibrium() {
        let idm = Idm {
            v0: 20.0,
            headway: 1.5,
            s0: 2.0,
            a_max: 1.5,
            b: 2.0,
        };
        // Free road at half the desired speed: a_max (1 - 1/16).
        assert!((idm.accel(10.0, f32::INFINITY, 0.0, 9.0) - 1.5 * 15.0 / 16.0).abs() < 1e-6);
        // At desired speed on a free road, no acceleration.
        assert!(idm.accel(20.0, f32::INFINITY, 0.0, 9.0).abs() < 1e-6);
        // Standing behind a standing leader at exactly s0: a = a_max (1 - 1) = 0.
        assert!(idm.accel(0.0, 2.0, 0.0, 9.0).abs() < 1e-6);
        // Approaching a stopped car fast at a short gap brakes at the cap.
        assert_eq!(idm.accel(15.0, 5.0, 0.0, 9.0), -9.0);
    }

    #[test]
    fn light_cycle() {
        let l = TrafficLight {
            pos: Vec2::ZERO,
            heading: Vec2::new(1.0, 0.0),
            offset: 2.0,
            green: 6.0,
            yellow: 3.0,
            cycle: 20.0,
        };
        assert_eq!(l.state(0.0), LightState::Green); // phase 2
        assert_eq!(l.state(4.5), LightState::Yellow); // phase 6.5
        assert_eq!(l.state(7.5), LightState::Red); // phase 9.5
        assert_eq!(l.state(18.5), LightState::Green); // phase 0.5 of the next cycle
    }

    #[test]
    fn cut_in_lateral_profile() {
        let a = Agent {
            path: 0,
            s: 0.0,
            d: 3.5,
            v: 10.0,
            accel: 0.0,
            length: 4.5,
            width: 1.9,
            idm: Idm {
                v0: 10.0,
                headway: 1.0,
                s0: 2.0,
                a_max: 1.0,
                b: 2.0,
            },
            behaviour: Behaviour::CutIn {
                at: 2.0,
                duration: 2.0,
                d_from: 3.5,
                d_to: 0.0,
            },
            yields_to_ego: false,
            active: true,
            pos: Vec2::ZERO,
            heading: Vec2::new(1.0, 0.0),
        };
        assert_eq!(a.scripted_d(1.0), 3.5);
        assert!((a.scripted_d(3.0) - 1.75).abs() < 1e-6);
        assert_eq!(a.scripted_d(5.0), 0.0);
        assert_eq!(a.intended_d(0.9), 3.5);
        assert_eq!(a.intended_d(1.0), 0.0);
    }
}
