//! Memory of a large batch: builds N worlds (default 10,000) over every family, drives them
//! with the expert for 200 steps, and prints the process's peak resident memory per world.
//! `cargo run --release -p deltaplan-sim --example big_batch [N]`

use deltaplan_sim::env::VecEnv;
use deltaplan_sim::{BatchEnv, Family, SimConfig, Split, StepBuffers};

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    let before = peak_rss_mib();
    let per_family = n.div_ceil(Family::ALL.len());
    let mut specs = Split::Eval.suite(&Family::ALL, per_family, Default::default());
    specs.truncate(n);
    let mut env = BatchEnv::fixed(SimConfig::default(), specs);
    let built = peak_rss_mib();
    let mut buf = StepBuffers::for_env(&env);
    let mut plans = vec![0.0; env.num_envs() * env.action_dim()];
    let t = std::time::Instant::now();
    for _ in 0..200 {
        env.expert_actions(&mut plans);
        env.step(&plans, &mut buf);
    }
    let secs = t.elapsed().as_secs_f64();
    let peak = peak_rss_mib();
    println!(
        "{n} worlds: peak RSS {peak:.0} MiB ({:.1} KiB per world; {built:.0} MiB after building, {before:.0} MiB before); 200 expert steps in {secs:.1} s ({:.0} world steps/s)",
        (peak - before) * 1024.0 / n as f64,
        200.0 * n as f64 / secs
    );
}
