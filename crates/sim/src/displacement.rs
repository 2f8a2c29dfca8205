//! Open-loop displacement errors of planned waypoints against reference waypoints: ADE (mean
//! distance over the waypoints) and FDE (distance at the final waypoint), in metres. The one
//! place deltaplan computes them (behaviour cloning's validation, the report's open-loop rows).

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
/// `[x0, y0, x1, y1, ..]`, in f64 and in a fixed order (bit-reproducible).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct DisplacementSums {
    ade: f64,
    fde: f64,
    plans: usize,
}

impl DisplacementSums {
    /// Adds one plan and its reference (flattened `(x, y)` waypoints of equal length).
    pub fn add(&mut self, plan: &[f32], reference: &[f32]) {
        let h = plan.len().min(reference.len()) / 2;
        for j in 0..h {
            let dx = f64::from(plan[2 * j] - reference[2 * j]);
            let dy = f64::from(plan[2 * j + 1] - reference[2 * j + 1]);
            let d = (dx * dx + dy * dy).sqrt();
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
        // Waypoint errors (3, 4) and (0, 0): distances 5 and 0 m: ADE 2.5, FDE 0.
        s.add(&[3.0, 4.0, 1.0, 1.0], &[0.0, 0.0, 1.0, 1.0]);
        assert_eq!(s.mean(), DisplacementError { ade: 2.5, fde: 0.0 });
        // Second plan: errors (0, 0) and (6, 8): ADE 5, FDE 10. Means over both plans.
        s.add(&[0.0, 0.0, 6.0, 8.0], &[0.0, 0.0, 0.0, 0.0]);
        assert_eq!(
            s.mean(),
            DisplacementError {
                ade: 3.75,
                fde: 5.0
            }
        );
    }
}
