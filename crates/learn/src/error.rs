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
    /// An invalid configuration value.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A named tensor that this model does not have.
    #[error("unknown tensor `{0}`")]
    UnknownTensor(String),
    /// A checkpoint that could not be (de)serialised.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
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
