//! Statistics over episode records: bootstrap intervals of metric means, per-family summaries,
//! paired differences between two policies on the same scenarios.

use deltaplan_sim::{EpisodeStats, Family};
use rand::RngExt;
use serde::{Deserialize, Serialize};

use crate::metric::{Metric, PerMetric};
use crate::{EvalError, Result};

/// A mean with a 95% confidence interval.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    pub mean: f64,
    pub lo: f64,
    pub hi: f64,
}

impl Estimate {
    /// The estimate of nothing (no samples): every field NaN, shown as "-" in report.md.
    pub const UNDEFINED: Estimate = Estimate {
        mean: f64::NAN,
        lo: f64::NAN,
        hi: f64::NAN,
    };
}

/// Every metric of a set of episodes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Summary {
    pub episodes: usize,
    pub estimates: PerMetric<Estimate>,
}

impl std::ops::Index<Metric> for Summary {
    type Output = Estimate;

    fn index(&self, m: Metric) -> &Estimate {
        &self.estimates[m]
    }
}

/// A summary of all episodes and one of each family that has episodes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Summaries {
    pub overall: Summary,
    /// Ordered by family name (the order of `report.json`'s keys).
    pub families: Vec<(Family, Summary)>,
}

impl Summaries {
    pub fn family(&self, family: Family) -> Option<&Summary> {
        self.families
            .iter()
            .find(|(f, _)| *f == family)
            .map(|(_, s)| s)
    }
}

/// Summary of `episodes`, and of each family separately.
pub fn summarize(episodes: &[EpisodeStats]) -> Summaries {
    let all: Vec<&EpisodeStats> = episodes.iter().collect();
    let mut families: Vec<(Family, Summary)> = Family::ALL
        .into_iter()
        .filter_map(|f| {
            let eps: Vec<&EpisodeStats> = episodes.iter().filter(|e| e.family == f).collect();
            (!eps.is_empty()).then(|| (f, summary(&eps)))
        })
        .collect();
    families.sort_by_key(|(f, _)| f.name());
    Summaries {
        overall: summary(&all),
        families,
    }
}

/// Paired difference `b - a` of every metric over the same scenarios, each with a bootstrap
/// interval resampling scenarios (each resample keeps the pairs together).
pub fn paired_differences(a: &[EpisodeStats], b: &[EpisodeStats]) -> Result<PerMetric<Estimate>> {
    check_paired(a, b)?;
    Ok(PerMetric::from_fn(|m| paired(a, b, m)))
}

/// Paired difference `b - a` of one metric; see [`paired_differences`].
pub fn paired_difference(
    a: &[EpisodeStats],
    b: &[EpisodeStats],
    metric: Metric,
) -> Result<Estimate> {
    check_paired(a, b)?;
    Ok(paired(a, b, metric))
}

/// Indices of the scenarios where `before` failed and `after` did not (same scenarios, same
/// order).
pub fn fixed_failures(before: &[EpisodeStats], after: &[EpisodeStats]) -> Result<Vec<usize>> {
    check_paired(before, after)?;
    Ok(before
        .iter()
        .zip(after)
        .enumerate()
        .filter(|(_, (b, a))| b.is_failure() && !a.is_failure())
        .map(|(i, _)| i)
        .collect())
}

/// Percentile bootstrap 95% interval of the mean of `values` (resampling indices from the
/// fixed stream `stream`, so reports are reproducible).
pub fn bootstrap_mean(values: &[f64], stream: u64) -> Estimate {
    let n = values.len();
    if n == 0 {
        return Estimate::UNDEFINED;
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    let mut rng = deltaplan_stdx::seed::rng(BOOTSTRAP_SEED, stream);
    let mut means: Vec<f64> = (0..BOOTSTRAP_SAMPLES)
        .map(|_| (0..n).map(|_| values[rng.random_range(0..n)]).sum::<f64>() / n as f64)
        .collect();
    means.sort_by(f64::total_cmp);
    Estimate {
        mean,
        lo: means[(0.025 * BOOTSTRAP_SAMPLES as f64) as usize],
        hi: means[((0.975 * BOOTSTRAP_SAMPLES as f64) as usize).min(BOOTSTRAP_SAMPLES - 1)],
    }
}

const BOOTSTRAP_SAMPLES: usize = 2000;
/// Bootstrap streams are `stdx::seed::rng(BOOTSTRAP_SEED, tag)`: independent of the run's
/// seed, so a report's intervals depend only on its episodes.
const BOOTSTRAP_SEED: u64 = 0;
/// The stream tag of paired differences (every metric uses it).
const PAIRED_STREAM: u64 = 99;

fn summary(eps: &[&EpisodeStats]) -> Summary {
    Summary {
        episodes: eps.len(),
        estimates: PerMetric::from_fn(|m| {
            let v: Vec<f64> = eps.iter().map(|e| m.value(e)).collect();
            bootstrap_mean(&v, m.bootstrap_seed())
        }),
    }
}

fn check_paired(a: &[EpisodeStats], b: &[EpisodeStats]) -> Result<()> {
    if a.len() != b.len() {
        return Err(EvalError::Unpaired(format!(
            "{} vs {} episodes",
            a.len(),
            b.len()
        )));
    }
    if let Some((x, y)) = a
        .iter()
        .zip(b)
        .find(|(x, y)| x.seed != y.seed || x.family != y.family)
    {
        return Err(EvalError::Unpaired(format!(
            "scenario {:?}/{} paired with {:?}/{}",
            x.family, x.seed, y.family, y.seed
        )));
    }
    Ok(())
}

fn paired(a: &[EpisodeStats], b: &[EpisodeStats], metric: Metric) -> Estimate {
    let d: Vec<f64> = a
        .iter()
        .zip(b)
        .map(|(x, y)| metric.value(y) - metric.value(x))
        .collect();
    bootstrap_mean(&d, PAIRED_STREAM)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_interval_brackets_mean_and_shrinks_with_n() {
        let small: Vec<f64> = (0..20).map(|i| (i % 2) as f64).collect();
        let large: Vec<f64> = (0..2000).map(|i| (i % 2) as f64).collect();
        let s = bootstrap_mean(&small, 1);
        let l = bootstrap_mean(&large, 1);
        assert_eq!(s.mean, 0.5);
        assert!(s.lo < 0.5 && s.hi > 0.5);
        // The interval of a mean of Bernoulli(0.5) scales like 1/sqrt(n): 10x narrower at 100x n.
        let ratio = (s.hi - s.lo) / (l.hi - l.lo);
        assert!(ratio > 6.0 && ratio < 15.0, "{ratio}");
        // A constant sample has a zero-width interval.
        let c = bootstrap_mean(&[3.0; 10], 1);
        assert_eq!((c.lo, c.mean, c.hi), (3.0, 3.0, 3.0));
    }

    #[test]
    fn bootstrap_draws_are_the_historical_ones() {
        // The implementation before the stdx seed helper, verbatim: reports stay bit-identical
        // only while both agree.
        fn historical(values: &[f64], seed: u64) -> (f64, f64) {
            use rand::SeedableRng;
            let n = values.len();
            let mut rng = rand_pcg::Pcg64::seed_from_u64(seed);
            let mut means: Vec<f64> = (0..BOOTSTRAP_SAMPLES)
                .map(|_| (0..n).map(|_| values[rng.random_range(0..n)]).sum::<f64>() / n as f64)
                .collect();
            means.sort_by(f64::total_cmp);
            (means[50], means[1950])
        }
        let v: Vec<f64> = (0..20).map(|i| f64::from(i * i % 7)).collect();
        for seed in [17, 25, PAIRED_STREAM] {
            let e = bootstrap_mean(&v, seed);
            assert_eq!(e.mean, 2.05);
            assert_eq!((e.lo, e.hi), historical(&v, seed), "seed {seed}");
            assert!(e.lo < e.hi);
        }
    }

    fn episode(family: Family, seed: u64, route_completion: f32, offroad: u32) -> EpisodeStats {
        EpisodeStats {
            family,
            seed,
            route_completion,
            offroad,
            ..Default::default()
        }
    }

    #[test]
    fn paired_difference_refuses_unpaired_lists() {
        let a = episode(Family::Curvy, 1, 50.0, 0);
        let b = episode(Family::Curvy, 1, 80.0, 0);
        let d = paired_difference(&[a], &[b], Metric::RouteCompletion).unwrap();
        assert_eq!((d.mean, d.lo, d.hi), (30.0, 30.0, 30.0));
        let c = EpisodeStats { seed: 2, ..b };
        assert!(paired_difference(&[a], &[c], Metric::RouteCompletion).is_err());
        assert!(paired_differences(&[a], &[b, b]).is_err());
        assert!(fixed_failures(&[a], &[c]).is_err());
    }

    #[test]
    fn summaries_per_family_and_fixed_failures() {
        let before = [
            episode(Family::Merge, 1, 40.0, 1),
            episode(Family::Curvy, 2, 100.0, 0),
            episode(Family::Merge, 3, 30.0, 1),
            episode(Family::Curvy, 4, 50.0, 1),
        ];
        let mut after = before;
        after[0].offroad = 0;
        after[0].route_completion = 100.0;
        after[1].offroad = 2;
        after[2].offroad = 0;
        assert_eq!(fixed_failures(&before, &after).unwrap(), vec![0, 2]);
        let s = summarize(&before);
        assert_eq!(s.overall.episodes, 4);
        assert_eq!(s.overall[Metric::FailureRate].mean, 0.75);
        assert_eq!(s.overall[Metric::RouteCompletion].mean, 55.0);
        // Families in name order, only those with episodes.
        let names: Vec<&str> = s.families.iter().map(|(f, _)| f.name()).collect();
        assert_eq!(names, ["curvy", "merge"]);
        let merge = s.family(Family::Merge).unwrap();
        assert_eq!(merge.episodes, 2);
        assert_eq!(merge[Metric::RouteCompletion].mean, 35.0);
        assert!(s.family(Family::CutIn).is_none());
        let d = paired_differences(&before, &after).unwrap();
        // Failures 3/4 -> 2/4; route completion +60 on scenario 0, mean +15.
        assert_eq!(d[Metric::FailureRate].mean, -0.25);
        assert_eq!(d[Metric::RouteCompletion].mean, 15.0);
    }
}
