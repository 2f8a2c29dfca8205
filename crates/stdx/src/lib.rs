//! deltaplan-stdx: the small helpers every deltaplan crate shares, each written once
//! (rust-analyzer's `stdx` idea). It depends on nothing of deltaplan's.
//!
//! - [`seed`]: SplitMix64 mixing, seeded generators for named streams, Fisher-Yates shuffles.
//! - [`fs`]: atomic file writes (temp file, fsync, rename, fsync of the directory) and the
//!   clean-up of temporaries a killed writer left behind.
//! - [`fuzz`]: mutation fuzzing of parsers on stable Rust (used by the test suites).
//! - [`fault`]: named fault-injection points (abort, full disk) for crash-safety tests; off
//!   unless the environment asks.

pub mod fault;
pub mod fs;
pub mod fuzz;
pub mod seed;
