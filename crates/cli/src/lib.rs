//! The deltaplan product as a library: the run's configuration ([`config::Config`], with its
//! defaults, file and `--set` overrides) and the stages that read and write a run's directory
//! ([`pipeline`]). The `deltaplan` binary (src/main.rs) is its command line; the Python package
//! (crates/py) calls the same functions, so both read one configuration and write the same
//! files.

pub mod bev_image;
pub mod config;
pub mod frozen;
pub mod pipeline;
pub mod serve;
pub mod sumo_eval;
pub mod sumo_tables;
pub mod sumo_world;
pub mod timings;
