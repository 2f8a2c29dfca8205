//! What a scenario is, as a plain value: its family, its difficulty knobs, the seed splits,
//! and the [`ScenarioSpec`] that determines a generated scenario bit for bit. Generation itself
//! lives in the `scenario` module.

use serde::{Deserialize, Serialize};

/// The scenario families.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// Curvy multi-lane road with sharp bends and traffic.
    #[default]
    Curvy,
    /// Car following behind a lead vehicle that brakes hard.
    HardBrake,
    /// A vehicle from an adjacent lane cuts in ahead of the ego.
    CutIn,
    /// Signalised 4-way intersection with crossing traffic; the route goes straight or turns.
    Intersection,
    /// Merge from an on-ramp onto a busier road.
    Merge,
}

impl Family {
    pub const ALL: [Family; 5] = [
        Family::Curvy,
        Family::HardBrake,
        Family::CutIn,
        Family::Intersection,
        Family::Merge,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Family::Curvy => "curvy",
            Family::HardBrake => "hard_brake",
            Family::CutIn => "cut_in",
            Family::Intersection => "intersection",
            Family::Merge => "merge",
        }
    }
}

/// Difficulty knobs shared by all families.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Difficulty {
    /// Vehicles per 100 m of lane.
    pub traffic_density: f32,
    /// 0 = gentle bends (minimum radius 150 m), 1 = sharpest (minimum radius 25 m).
    pub curvature: f32,
    /// Scale on speed limits.
    pub speed: f32,
    /// 0 = mild (soft braking, late and slow cut-ins, polite drivers), 1 = aggressive.
    pub aggressiveness: f32,
}

impl Default for Difficulty {
    fn default() -> Self {
        Difficulty {
            traffic_density: 1.5,
            curvature: 0.6,
            speed: 1.0,
            aggressiveness: 0.4,
        }
    }
}

/// A difficulty knob outside its allowed range.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("scenario field `{field}` = {value} is out of range: allowed {min} to {max}")]
pub struct RangeError {
    pub field: &'static str,
    pub value: f32,
    pub min: f32,
    pub max: f32,
}

impl Difficulty {
    /// Allowed ranges, by field name.
    pub const RANGES: [(&'static str, f32, f32); 4] = [
        ("traffic_density", 0.0, 5.0),
        ("curvature", 0.0, 1.0),
        ("speed", 0.5, 1.5),
        ("aggressiveness", 0.0, 1.0),
    ];

    /// Checks every field against [`Difficulty::RANGES`]; NaN is out of every range.
    pub fn validate(&self) -> Result<(), RangeError> {
        let values = [
            self.traffic_density,
            self.curvature,
            self.speed,
            self.aggressiveness,
        ];
        for ((field, min, max), value) in Self::RANGES.into_iter().zip(values) {
            if !(min..=max).contains(&value) {
                return Err(RangeError {
                    field,
                    value,
                    min,
                    max,
                });
            }
        }
        Ok(())
    }

    /// Interpolates every knob: `t = 0` gives `self`, `t = 1` gives `other`.
    pub fn lerp(&self, other: &Difficulty, t: f32) -> Difficulty {
        let l = |a: f32, b: f32| a + (b - a) * t;
        Difficulty {
            traffic_density: l(self.traffic_density, other.traffic_density),
            curvature: l(self.curvature, other.curvature),
            speed: l(self.speed, other.speed),
            aggressiveness: l(self.aggressiveness, other.aggressiveness),
        }
    }

    /// The range training draws from: from `self` up to `mix` of the way to [`Self::harder`].
    pub fn training_range(&self, mix: f32) -> (Difficulty, Difficulty) {
        (*self, self.lerp(&self.harder(), mix))
    }

    /// The harder evaluation split's difficulty derived from a base.
    pub fn harder(&self) -> Difficulty {
        Difficulty {
            traffic_density: (self.traffic_density * 1.5).min(5.0),
            curvature: (self.curvature + 0.3).min(1.0),
            speed: (self.speed * 1.1).min(1.5),
            aggressiveness: (self.aggressiveness + 0.4).min(1.0),
        }
    }
}

/// Everything that determines a scenario: generating twice from the same spec gives the
/// same world, bit for bit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ScenarioSpec {
    pub family: Family,
    pub seed: u64,
    pub difficulty: Difficulty,
}

/// Disjoint seed ranges for training, the refinement's validation (which picks the refined
/// policy, so it must never be an evaluation split) and the two evaluation splits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    Train,
    Eval,
    Hard,
    Validation,
}

impl Split {
    /// First seed of the split; each split owns `SPLIT_SIZE` seeds.
    pub fn seed_base(self) -> u64 {
        match self {
            Split::Train => 0,
            Split::Eval => 1 << 40,
            Split::Hard => 2 << 40,
            Split::Validation => 3 << 40,
        }
    }

    pub const SPLIT_SIZE: u64 = 1 << 40;

    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Eval => "eval",
            Split::Hard => "hard",
            Split::Validation => "validation",
        }
    }

    /// Whether a seed belongs to this split.
    pub fn contains(self, seed: u64) -> bool {
        (self.seed_base()..self.seed_base() + Self::SPLIT_SIZE).contains(&seed)
    }

    /// The fixed evaluation suite of this split: `per_family` scenarios of every family in
    /// `families`, with the split's difficulty (the hard split makes `base` harder).
    pub fn suite(
        self,
        families: &[Family],
        per_family: usize,
        base: Difficulty,
    ) -> Vec<ScenarioSpec> {
        let difficulty = match self {
            Split::Hard => base.harder(),
            _ => base,
        };
        let mut out = Vec::with_capacity(families.len() * per_family);
        for (fi, &family) in families.iter().enumerate() {
            for k in 0..per_family {
                out.push(ScenarioSpec {
                    family,
                    seed: self.seed_base() + (fi * 1_000_003 + k) as u64,
                    difficulty,
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_difficulty_names_field_and_range() {
        let d = Difficulty {
            curvature: 1.7,
            ..Default::default()
        };
        let e = d.validate().unwrap_err();
        assert_eq!(e.field, "curvature");
        assert_eq!((e.min, e.max), (0.0, 1.0));
        let msg = e.to_string();
        assert!(
            msg.contains("curvature") && msg.contains("1.7") && msg.contains("0 to 1"),
            "{msg}"
        );
        let nan = Difficulty {
            speed: f32::NAN,
            ..Default::default()
        };
        assert_eq!(nan.validate().unwrap_err().field, "speed");
        assert!(Difficulty::default().validate().is_ok());
        assert!(Difficulty::default().harder().validate().is_ok());
    }

    #[test]
    fn difficulty_from_toml_rejects_unknown_fields() {
        let ok: Difficulty = toml::from_str("traffic_density = 2.0").unwrap();
        assert_eq!(ok.traffic_density, 2.0);
        assert_eq!(ok.curvature, Difficulty::default().curvature);
        let err = toml::from_str::<Difficulty>("trafic_density = 2.0").unwrap_err();
        assert!(err.to_string().contains("trafic_density"), "{err}");
    }

    #[test]
    fn splits_are_disjoint_and_suites_stay_inside() {
        let d = Difficulty::default();
        let all = [Split::Train, Split::Eval, Split::Hard, Split::Validation];
        for split in all {
            for spec in split.suite(&Family::ALL, 50, d) {
                assert!(split.contains(spec.seed));
                for other in all {
                    if other != split {
                        assert!(!other.contains(spec.seed));
                    }
                }
            }
        }
        assert_eq!(
            Split::Hard.suite(&Family::ALL, 1, d)[0].difficulty,
            d.harder()
        );
    }
}
