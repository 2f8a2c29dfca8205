//! Open-loop displacement errors of planned waypoints against the expert's: ADE (mean distance
//! over the waypoints) and FDE (distance at the final waypoint), in metres.

/// Running sums of ADE and FDE over plans, in f64 and in a fixed order (so results are
/// bit-reproducible).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct DisplacementErrors {
    ade_sum: f64,
    fde_sum: f64,
    plans: usize,
}

impl DisplacementErrors {
    /// Adds one plan: `pred` and `target` are flattened `(x, y)` waypoints of equal length.
    pub fn add(&mut self, pred: &[f32], target: &[f32]) {
        let h = pred.len().min(target.len()) / 2;
        for j in 0..h {
            let dx = f64::from(pred[2 * j] - target[2 * j]);
            let dy = f64::from(pred[2 * j + 1] - target[2 * j + 1]);
            let dist = (dx * dx + dy * dy).sqrt();
            self.ade_sum += dist / h as f64;
            if j + 1 == h {
                self.fde_sum += dist;
            }
        }
        self.plans += 1;
    }

    /// Mean (ADE, FDE) over the plans added (0 when none were).
    pub fn mean(&self) -> (f64, f64) {
        let n = self.plans.max(1) as f64;
        (self.ade_sum / n, self.fde_sum / n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_ade_and_fde() {
        let mut e = DisplacementErrors::default();
        // Errors (3, 4) and (0, 0): distances 5 and 0; ADE 2.5, FDE 0.
        e.add(&[3.0, 4.0, 1.0, 1.0], &[0.0, 0.0, 1.0, 1.0]);
        // Errors (0, 0) and (6, 8): ADE 5, FDE 10.
        e.add(&[0.0, 0.0, 6.0, 8.0], &[0.0, 0.0, 0.0, 0.0]);
        assert_eq!(e.mean(), (3.75, 5.0));
        assert_eq!(DisplacementErrors::default().mean(), (0.0, 0.0));
    }
}
