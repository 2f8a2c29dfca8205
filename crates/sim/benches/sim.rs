//! Simulator throughput: ego steps per second with the expert planning for every ego, at
//! default traffic, on 1 thread and on all threads; and the peak memory of a 1,024-world batch.
//!
//! `cargo bench -p deltaplan-sim` (or `cargo bench -p deltaplan-sim -- --quick`).

use deltaplan_sim::batch::StepBuffers;
use deltaplan_sim::spec::{Difficulty, Family};
use deltaplan_sim::{BatchEnv, SimConfig};
use std::time::Instant;

fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Median ego steps per second over `reps` timed runs of `steps` steps each.
fn measure(env: &mut BatchEnv, steps: usize, reps: usize) -> f64 {
    let n = env.len();
    let mut buf = StepBuffers::new(n);
    let mut actions = vec![0.0; n * env.action_dim()];
    // Warm-up: settles buffer capacities and caches.
    for _ in 0..20 {
        env.expert_actions(&mut actions);
        env.step(&actions, &mut buf);
    }
    let mut rates: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..steps {
                env.expert_actions(&mut actions);
                env.step(&actions, &mut buf);
            }
            (n * steps) as f64 / t.elapsed().as_secs_f64()
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    rates[reps / 2]
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (steps, reps) = if quick { (50, 3) } else { (200, 5) };
    let cfg = SimConfig::default();
    let n = 1024;
    let base = peak_rss_mib().unwrap_or(0.0);
    let mut env = BatchEnv::train(cfg, n, 7, Family::ALL.to_vec(), Difficulty::default());
    let after_build = peak_rss_mib().unwrap_or(0.0);
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let mut results = Vec::new();
    for threads in [1, cores] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("thread pool");
        let rate = pool.install(|| measure(&mut env, steps, reps));
        results.push((threads, rate));
    }
    let peak = peak_rss_mib().unwrap_or(0.0);
    println!("simulator: expert driving every ego, {n} worlds, default traffic, all families");
    println!("| threads | ego steps/s | per core | vs 1 thread |");
    println!("|---:|---:|---:|---:|");
    let one = results[0].1;
    for (threads, rate) in &results {
        println!(
            "| {threads} | {rate:.0} | {:.0} | {:.2}x |",
            rate / *threads as f64,
            rate / one
        );
    }
    println!(
        "peak RSS: {peak:.1} MiB (process before the batch {base:.1} MiB, after building 1,024 worlds {after_build:.1} MiB)"
    );
    println!("highway-env on this machine: 3-140 env steps/s (../shared/research/simulators.md)");
}
