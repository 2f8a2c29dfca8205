//! Open-loop displacement errors of plans against reference plans (ADE/FDE), the one place
//! deltaplan-eval computes them.

use serde::{Deserialize, Serialize};

/// Mean open-loop displacement errors, metres.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DisplacementError {
    /// Average displacement error: the mean over waypoints of the distance to the reference.
    pub ade: f64,
    /// Final displacement error: the distance at the last waypoint.
    pub fde: f64,
}

/// Running sums of displacement errors over plans of `(x, y)` waypoints, interleaved as
/// `[x0, y0, x1, y1, ..]`.
#[derive(Clone, Copy, Debug, Default)]
pub struct DisplacementSums {
    ade: f64,
    fde: f64,
    plans: usize,
}

impl DisplacementSums {
    /// Adds one plan and its reference (equal lengths, an even number of coordinates).
    pub fn add(&mut self, plan: &[f32], reference: &[f32]) {
        debug_assert_eq!(plan.len(), reference.len());
        let h = plan.len() / 2;
        for j in 0..h {
            let d = f64::from(
                (plan[2 * j] - reference[2 * j]).hypot(plan[2 * j + 1] - reference[2 * j + 1]),
            );
            // Summed waypoint by waypoint (not per plan first): the order the report's
            // numbers were computed in since the first version.
            self.ade += d / h as f64;
            if j + 1 == h {
                self.fde += d;
            }
        }
        self.plans += 1;
    }

    /// The means over the plans added (zero when none were).
    pub fn mean(&self) -> DisplacementError {
        let n = self.plans.max(1) as f64;
        DisplacementError {
            ade: self.ade / n,
            fde: self.fde / n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_errors() {
        let mut s = DisplacementSums::default();
        assert_eq!(s.mean(), DisplacementError::default());
        // Waypoint errors 3-4-5 -> 5 m and 0 m: ADE 2.5, FDE 0.
        s.add(&[3.0, 4.0, 1.0, 1.0], &[0.0, 0.0, 1.0, 1.0]);
        assert_eq!(s.mean(), DisplacementError { ade: 2.5, fde: 0.0 });
        // Second plan: errors 0 and 2 m: ADE 1, FDE 2. Means over both plans.
        s.add(&[0.0, 0.0, 1.0, 3.0], &[0.0, 0.0, 1.0, 1.0]);
        assert_eq!(
            s.mean(),
            DisplacementError {
                ade: 1.75,
                fde: 1.0
            }
        );
    }
}
