//! `deltaplan serve`: a run's planner (SFT, refined, or an ONNX planner) over alpasim's egodriver
//! gRPC contract (crate `deltaplan-serve`), until Ctrl-C.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Result};

use deltaplan_eval::{Driver, Policy};
use deltaplan_serve::{Assumptions, ServeOptions};

use crate::config::Config;
use crate::pipeline;

/// What to serve and where.
pub struct ServeRequest<'a> {
    pub run: &'a Path,
    pub policy: Policy,
    pub listen: SocketAddr,
    pub assumptions: Assumptions,
}

/// The configuration a served run was trained with: `--config` if given, else the run's
/// `run.toml`, else the defaults; `--set` and `--seed` on top.
pub fn run_config(
    config: Option<&Path>,
    sets: &[String],
    seed: Option<u64>,
    run: &Path,
) -> Result<Config> {
    let remembered = run.join("run.toml");
    let file = match config {
        Some(path) => Some(path),
        None => remembered.is_file().then_some(remembered.as_path()),
    };
    Config::load(file, sets, seed)
}

/// Serves until Ctrl-C; prints `listening on ADDR` on standard output once it accepts calls.
pub fn serve(cfg: &Config, request: &ServeRequest) -> Result<()> {
    if request.policy == Policy::Expert {
        bail!("the expert is privileged (it reads the whole simulated world): serve sft or rl");
    }
    let planner_name = match &cfg.planner {
        Some(p) => p.display().to_string(),
        None => "the built-in SFT planner".into(),
    };
    let options = ServeOptions {
        listen: request.listen,
        assumptions: request.assumptions,
        version_id: format!(
            "deltaplan-{} {} ({})",
            env!("CARGO_PKG_VERSION"),
            request.policy.name(),
            request.run.display()
        ),
    };
    pipeline::begin_serving();
    pipeline::with_driver(cfg, request.run, request.policy, |driver| {
        let Driver::Planner(planner) = driver else {
            bail!("the expert cannot be served");
        };
        let on_listening = |addr: SocketAddr| {
            tracing::info!(
                "serving {} of {} ({planner_name}) over egodriver.EgodriverService; Ctrl-C stops",
                request.policy.name(),
                request.run.display(),
            );
            println!("listening on {addr}");
        };
        let shutdown = async {
            while !pipeline::stop_requested() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            tracing::info!("Ctrl-C: finishing open calls and stopping");
        };
        deltaplan_serve::serve(*planner, &cfg.sim, &options, on_listening, shutdown)?;
        Ok(())
    })
}
