//! deltaplan-stdx: the small helpers every deltaplan crate shares, each written once
//! (rust-analyzer's `stdx` idea). It depends on nothing of deltaplan's.
//!
//! - [`seed`]: SplitMix64 mixing, seeded generators for named streams, Fisher-Yates shuffles.
//! - [`fs`]: atomic file writes (temp file, fsync, rename, fsync of the directory).

pub mod fs;
pub mod seed;
