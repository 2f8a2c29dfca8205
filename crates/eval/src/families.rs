//! Family-level views of two policies on the same scenarios: the paired driving-score
//! difference per family with the flags that say where the refined planner is worse, and what
//! went wrong per family (failure types).
//!
//! An overall gain can hide a family that got worse; the suites are paired, so each family's
//! difference has its own bootstrap interval over that family's scenarios.

use deltaplan_sim::{EndReason, EpisodeStats, Family};

use crate::metric::Metric;
use crate::stats::{paired_difference, Estimate};
use crate::Result;

/// A family is flagged as worse when its mean driving score drops by more than this many
/// points (the bar: no family lower by more than 1 point).
pub const WORSE_BY_POINTS: f64 = 1.0;

/// Differences smaller than this are the single-precision rounding of per-episode scores (two
/// identical drives can differ by 1e-5 points), not driving.
pub const ROUNDING_POINTS: f64 = 1e-3;

/// The paired difference `b - a` of the driving score over one family's scenarios.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FamilyDifference {
    pub family: Family,
    /// Mean over the family's scenarios with its 95% paired bootstrap interval, points.
    pub difference: Estimate,
}

impl FamilyDifference {
    /// `b` is worse than `a` by more than [`WORSE_BY_POINTS`] on average.
    pub fn worse_by_more_than_a_point(&self) -> bool {
        self.difference.mean < -WORSE_BY_POINTS
    }

    /// The whole 95% interval lies below zero: worse beyond the suite's noise, by any margin
    /// (beyond [`ROUNDING_POINTS`], so equal drives never count).
    pub fn interval_below_zero(&self) -> bool {
        self.difference.hi < -ROUNDING_POINTS
    }

    /// Either flag: the report lists this family as one the refined planner makes worse.
    pub fn flagged(&self) -> bool {
        self.worse_by_more_than_a_point() || self.interval_below_zero()
    }
}

/// Paired driving-score differences `b - a` per family, ordered by family name (the order of
/// `report.json`'s family keys). `a` and `b` must hold the same scenarios in the same order.
pub fn family_differences(a: &[EpisodeStats], b: &[EpisodeStats]) -> Result<Vec<FamilyDifference>> {
    let mut families: Vec<Family> = Family::ALL
        .into_iter()
        .filter(|f| a.iter().any(|e| e.family == *f))
        .collect();
    families.sort_by_key(|f| f.name());
    families
        .into_iter()
        .map(|family| {
            let of = |eps: &[EpisodeStats]| -> Vec<EpisodeStats> {
                eps.iter().filter(|e| e.family == family).copied().collect()
            };
            Ok(FamilyDifference {
                family,
                difference: paired_difference(&of(a), &of(b), Metric::DrivingScore)?,
            })
        })
        .collect()
}

/// How many episodes had each kind of failure or infraction (an episode can count in several
/// columns only if the simulator recorded several; most end at the first).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FailureCounts {
    pub episodes: usize,
    /// A collision with a vehicle or a static obstacle.
    pub collision: usize,
    /// Left the drivable area.
    pub offroad: usize,
    /// Ran a red light.
    pub red_light: usize,
    /// A non-finite plan or vehicle state (a broken planner).
    pub non_finite: usize,
    /// Ran out of time before the end of the route.
    pub time_limit: usize,
    /// Stood still for too long.
    pub blocked: usize,
}

impl FailureCounts {
    /// The column names, in the order of [`FailureCounts::values`] (also `report.json`'s keys).
    pub const NAMES: [&'static str; 6] = [
        "collision",
        "offroad",
        "red_light",
        "non_finite",
        "time_limit",
        "blocked",
    ];

    /// Counts over `episodes`.
    pub fn of<'a>(episodes: impl IntoIterator<Item = &'a EpisodeStats>) -> FailureCounts {
        let mut c = FailureCounts::default();
        for e in episodes {
            c.episodes += 1;
            c.collision += usize::from(e.had_collision());
            c.offroad += usize::from(e.offroad > 0);
            c.red_light += usize::from(e.red_lights > 0);
            c.non_finite += usize::from(e.end == EndReason::NonFinite);
            c.time_limit += usize::from(e.end == EndReason::TimeLimit);
            c.blocked += usize::from(e.end == EndReason::Blocked);
        }
        c
    }

    /// The counts in the order of [`FailureCounts::NAMES`].
    pub fn values(&self) -> [usize; 6] {
        [
            self.collision,
            self.offroad,
            self.red_light,
            self.non_finite,
            self.time_limit,
            self.blocked,
        ]
    }
}

/// Failure counts per family (ordered by family name), for the families that have episodes.
pub fn failure_types(episodes: &[EpisodeStats]) -> Vec<(Family, FailureCounts)> {
    let mut out: Vec<(Family, FailureCounts)> = Family::ALL
        .into_iter()
        .filter(|f| episodes.iter().any(|e| e.family == *f))
        .map(|f| {
            (
                f,
                FailureCounts::of(episodes.iter().filter(|e| e.family == f)),
            )
        })
        .collect();
    out.sort_by_key(|(f, _)| f.name());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn estimate(mean: f64, lo: f64, hi: f64) -> FamilyDifference {
        FamilyDifference {
            family: Family::Merge,
            difference: Estimate { mean, lo, hi },
        }
    }

    #[test]
    fn flags_on_hand_made_differences() {
        // Worse by 1.5 but the interval reaches +0.5: the first flag only.
        let a = estimate(-1.5, -3.0, 0.5);
        assert!(a.worse_by_more_than_a_point() && !a.interval_below_zero() && a.flagged());
        // Worse by 0.5 with the interval below zero: the second flag only.
        let b = estimate(-0.5, -0.9, -0.1);
        assert!(!b.worse_by_more_than_a_point() && b.interval_below_zero() && b.flagged());
        // Exactly one point worse is not "more than a point"; an interval touching zero is
        // not below it, nor is one that misses it by rounding.
        let c = estimate(-1.0, -2.0, 0.0);
        assert!(!c.flagged());
        assert!(!estimate(-1e-5, -2e-5, -1e-6).flagged());
        // Better is never flagged.
        assert!(!estimate(2.0, 1.0, 3.0).flagged());
        // Both.
        let d = estimate(-4.0, -6.0, -2.0);
        assert!(d.worse_by_more_than_a_point() && d.interval_below_zero());
    }

    fn episode(family: Family, seed: u64, route_completion: f32, end: EndReason) -> EpisodeStats {
        EpisodeStats {
            family,
            seed,
            route_completion,
            route_length: 100.0,
            collisions_vehicle: u32::from(end == EndReason::CollisionVehicle),
            offroad: u32::from(end == EndReason::OffRoad),
            red_lights: u32::from(end == EndReason::RedLight),
            end,
            ..Default::default()
        }
    }

    #[test]
    fn per_family_differences_and_failure_types_of_hand_made_episodes() {
        let done = EndReason::RouteCompleted;
        // Merge: b loses 2 points on each of its two scenarios; curvy: b gains 10 on one.
        let a = [
            episode(Family::Merge, 1, 100.0, done),
            episode(Family::Curvy, 2, 80.0, EndReason::TimeLimit),
            episode(Family::Merge, 3, 90.0, done),
            episode(Family::Curvy, 4, 100.0, done),
        ];
        let mut b = a;
        b[0].route_completion = 98.0;
        b[1].route_completion = 90.0;
        b[1].end = done;
        b[2].route_completion = 88.0;
        let d = family_differences(&a, &b).unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].family, Family::Curvy);
        assert!((d[0].difference.mean - 5.0).abs() < 1e-9);
        assert!(!d[0].flagged());
        assert_eq!(d[1].family, Family::Merge);
        let m = d[1].difference;
        assert!(
            (m.mean + 2.0).abs() < 1e-9 && (m.lo + 2.0).abs() < 1e-9 && (m.hi + 2.0).abs() < 1e-9
        );
        assert!(d[1].worse_by_more_than_a_point() && d[1].interval_below_zero());
        // Unpaired lists are refused.
        assert!(family_differences(&a, &b[..3]).is_err());

        let eps = [
            episode(Family::Merge, 1, 10.0, EndReason::CollisionVehicle),
            episode(Family::Merge, 2, 10.0, EndReason::OffRoad),
            episode(Family::Curvy, 3, 10.0, EndReason::NonFinite),
            episode(Family::Curvy, 4, 10.0, EndReason::RedLight),
            episode(Family::Curvy, 5, 10.0, EndReason::TimeLimit),
            episode(Family::Curvy, 6, 10.0, EndReason::Blocked),
            episode(Family::Curvy, 7, 100.0, done),
        ];
        let f = failure_types(&eps);
        assert_eq!(f[0].0, Family::Curvy);
        assert_eq!(f[0].1.values(), [0, 0, 1, 1, 1, 1]);
        assert_eq!(f[0].1.episodes, 5);
        assert_eq!(f[1].1.values(), [1, 1, 0, 0, 0, 0]);
    }
}
