//! Errors for everything a caller can get wrong: shapes, configuration, checkpoint names.

/// Errors raised by the learning crate. Shape errors name the offending buffer and both sizes.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LearnError {
    /// A buffer has the wrong number of elements.
    #[error("shape mismatch for `{name}`: expected {expected} elements, got {got}")]
    Shape {
        /// Which buffer (e.g. `obs`, `advantages`, `0.weight`).
        name: String,
        /// Elements required.
        expected: usize,
        /// Elements supplied.
        got: usize,
    },
    /// A flat `[rows, width]` buffer whose length is not a multiple of its row width.
    #[error("`{name}` has {len} elements, which is not a multiple of its row width {width}")]
    NotMultiple {
        /// Which buffer.
        name: String,
        /// Its length.
        len: usize,
        /// The row width it must be a multiple of.
        width: usize,
    },
    /// The frozen planner failed.
    #[error(transparent)]
    Planner(#[from] crate::planner::PlannerError),
    /// An invalid configuration value.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// The rollout workers of a distributed refinement failed or could not be reached.
    #[error("the rollout workers failed: {0}")]
    Workers(String),
    /// A named tensor that this model does not have.
    #[error("unknown tensor `{0}`")]
    UnknownTensor(String),
    /// A checkpoint that could not be (de)serialised.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// A file to load does not exist.
    #[error("`{path}` not found: {fix}")]
    FileMissing {
        /// The file.
        path: String,
        /// How to create it.
        fix: String,
    },
    /// Reading or writing a file failed at the operating-system level.
    #[error("cannot {op} `{path}`: {reason}")]
    Io {
        /// What was attempted ("read", "write", "rename", ...).
        op: &'static str,
        /// The file.
        path: String,
        /// The OS error, as text (io::Error is neither Clone nor PartialEq).
        reason: String,
    },
    /// A file that is not a valid safetensors file written by deltaplan (cut short, overwritten,
    /// or from another tool).
    #[error("`{path}` is truncated or corrupt ({reason}): {fix}")]
    Corrupt {
        /// The file.
        path: String,
        /// What failed to parse.
        reason: String,
        /// How to recreate it.
        fix: String,
    },
    /// A deltaplan file of another kind than the caller asked for (e.g. a dataset passed where a
    /// checkpoint is expected).
    #[error("`{path}` is {found}, not {expected}: pass the right file")]
    WrongKind {
        /// The file.
        path: String,
        /// What the caller wanted, described ("an SFT planner checkpoint (kind `sft_planner`)").
        expected: String,
        /// What the file holds, described.
        found: String,
    },
    /// A deltaplan file written with another schema version than this build reads.
    #[error("`{path}` ({kind}) has schema version {found}, but this build reads version {expected}: {fix}")]
    SchemaVersion {
        /// The file.
        path: String,
        /// Its kind.
        kind: String,
        /// Version this build reads.
        expected: u32,
        /// Version in the file.
        found: u64,
        /// How to recreate it.
        fix: String,
    },
    /// A tensor the loader needs is absent from the file.
    #[error("`{path}` has no tensor `{name}`: {fix}")]
    MissingTensor {
        /// The file.
        path: String,
        /// The tensor.
        name: String,
        /// How to recreate the file.
        fix: String,
    },
    /// A tensor in a file has another shape than its metadata implies.
    #[error("tensor `{name}` in `{path}` has shape {got:?}, expected {expected:?}: {fix}")]
    TensorShape {
        /// The file.
        path: String,
        /// The tensor.
        name: String,
        /// Shape the metadata implies.
        expected: Vec<usize>,
        /// Shape in the file.
        got: Vec<usize>,
        /// How to recreate the file.
        fix: String,
    },
    /// A non-finite number where training or a file needs finite ones, named where it first
    /// appeared (which tensor, loss, observation or reward; which iteration, epoch or world).
    #[error("non-finite value: {what} at {at}")]
    NonFinite {
        /// What holds it, e.g. "tensor `actor.0.weight` (3 of 8192 values)".
        what: String,
        /// Where in training, e.g. "refinement iteration 4" or "SFT epoch 2".
        at: String,
    },
    /// A well-formed file that does not fit this build or its caller (observation width,
    /// horizon, inconsistent metadata).
    #[error("`{path}` is incompatible: {reason}: {fix}")]
    Incompatible {
        /// The file.
        path: String,
        /// What does not match, with both values.
        reason: String,
        /// How to fix it.
        fix: String,
    },
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, LearnError>;

/// Fails with [`LearnError::Shape`] unless `got == expected` (the name is only built on error).
#[inline]
pub(crate) fn check_len(name: &str, got: usize, expected: usize) -> Result<()> {
    if got == expected {
        Ok(())
    } else {
        Err(LearnError::Shape {
            name: name.to_string(),
            expected,
            got,
        })
    }
}

/// Number of rows of a flat `[rows, width]` buffer, or [`LearnError::NotMultiple`].
#[inline]
pub(crate) fn rows_of(name: &str, len: usize, width: usize) -> Result<usize> {
    if width == 0 || !len.is_multiple_of(width) {
        Err(LearnError::NotMultiple {
            name: name.to_string(),
            len,
            width,
        })
    } else {
        Ok(len / width)
    }
}
