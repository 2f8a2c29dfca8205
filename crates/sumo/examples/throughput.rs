//! What the bridge costs: SUMO stepping a generated network with no ego (TraCI step by step,
//! and SUMO alone running the same simulated time in one call: its own speed, what in-process
//! libsumo approaches), against one SUMO world stepping the ego with the expert (moveToXY,
//! step, subscriptions, deltaplan's controller, events and observation). One process, one core.
//!
//! `cargo run --release -p deltaplan-sumo --example throughput [STEPS]`

use deltaplan_sim::config::SimConfig;
use deltaplan_sumo::locate::SumoBinaries;
use deltaplan_sumo::netgen::{generate, NetKind};
use deltaplan_sumo::process::{SumoProcess, SumoRun};
use deltaplan_sumo::traci::{cmd, Request};
use deltaplan_sumo::{NetContext, SumoConfig, SumoWorld};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let steps: usize = std::env::args().nth(1).map_or(Ok(3000), |s| s.parse())?;
    let bins = SumoBinaries::locate_default()?;
    let dir = std::env::temp_dir().join("deltaplan-sumo-throughput");
    let sumo_cfg = SumoConfig::default();
    for kind in [NetKind::Grid, NetKind::Spider] {
        let files = generate(&bins, &dir, kind, 3, sumo_cfg.vehicles_per_hour)?;
        let run = SumoRun {
            net: files.net.clone(),
            routes: files.routes.clone(),
            begin: files.begin,
            seed: 1,
            step_length: 0.1,
            timeout: Duration::from_secs(60),
        };
        // SUMO alone: after the warm-up, the simulated time of `steps` steps in one call.
        let warm = f64::from(sumo_cfg.warmup_seconds);
        let mut p = SumoProcess::start(&bins, &run)?;
        let mut req = Request::default();
        req.simulation_step(warm);
        p.client.send_checked(&req)?;
        req.clear();
        req.simulation_step(warm + 0.1 * steps as f64);
        let t0 = Instant::now();
        p.client.send_checked(&req)?;
        let raw_alone = steps as f64 / t0.elapsed().as_secs_f64();
        drop(p);
        // Raw over TCP: the same simulated time, one step per round trip.
        let mut p = SumoProcess::start(&bins, &run)?;
        req.clear();
        req.simulation_step(warm);
        p.client.send_checked(&req)?;
        req.clear();
        req.simulation_step(0.0);
        let t0 = Instant::now();
        for _ in 0..steps {
            let mut a = p.client.send(&req)?;
            a.status(cmd::SIMULATION_STEP)?;
        }
        let raw_tcp = steps as f64 / t0.elapsed().as_secs_f64();
        drop(p);
        // The bridge: one world, the expert driving, episodes restarting (a new SUMO each).
        let net = Arc::new(NetContext::load(files)?);
        let mut w = SumoWorld::new(SimConfig::default(), sumo_cfg.clone(), net, bins.clone());
        let mut plan = vec![0.0; SimConfig::default().action_dim()];
        let (mut n, mut episodes, mut seed) = (0, 0, 0);
        let mut stepping = Duration::ZERO;
        let t0 = Instant::now();
        w.reset(seed)?;
        while n < steps {
            let ts = Instant::now();
            w.expert_plan(&mut plan);
            let end = w.step(&plan)?.end;
            stepping += ts.elapsed();
            n += 1;
            if end != deltaplan_sim::events::EndReason::Running {
                episodes += 1;
                seed += 1;
                w.reset(seed)?;
            }
        }
        let total = t0.elapsed().as_secs_f64();
        println!(
            "{}: raw SUMO over TCP {raw_tcp:.0} steps/s, SUMO alone {raw_alone:.0} steps/s; SUMO world with ego {:.0} steps/s stepping, {:.0} steps/s with resets ({episodes} episodes ended in {n} steps); bridge / raw TCP = {:.2}",
            kind.name(),
            n as f64 / stepping.as_secs_f64(),
            n as f64 / total,
            (n as f64 / stepping.as_secs_f64()) / raw_tcp
        );
    }
    Ok(())
}
