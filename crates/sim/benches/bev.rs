//! BEV rasterisation throughput at the default size (64 x 64 x 9 at 0.75 m/px) for a 256-world
//! batch of every family at default traffic, driven by the expert to varied states, on 1 and 2
//! threads. The bar is 20,000 rasters/s per core.
//!
//! Two groups: `bev_cpu` measures the CPU time of every thread of the process (Linux
//! `/proc/self/task/*/schedstat`), so its `thrpt` is rasters per second per core whatever else
//! the machine runs (idle pool threads' spinning counts against us); `bev_wall` is wall-clock
//! (rasters/s of the whole batch call; meaningful on an otherwise idle machine).
//!
//! `cargo bench -p deltaplan-sim --bench bev`

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use deltaplan_sim::batch::StepBuffers;
use deltaplan_sim::bev::{self, BevSpec};
use deltaplan_sim::spec::{Difficulty, Family};
use deltaplan_sim::{BatchEnv, SimConfig};
use std::hint::black_box;

const WORLDS: usize = 256;

/// A batch whose worlds are at different points of their episodes (some already reset).
fn driven_batch(n: usize, steps: usize) -> BatchEnv {
    let cfg = SimConfig::default();
    let mut env = BatchEnv::train(cfg, n, 7, Family::ALL.to_vec(), Difficulty::default());
    let mut buf = StepBuffers::new(n);
    let mut actions = vec![0.0; n * env.action_dim()];
    for _ in 0..steps {
        env.expert_actions(&mut actions);
        env.step(&actions, &mut buf);
    }
    env
}

/// `observe_bev` over the batch on 1 and 2 threads, and `bev::render` world by world on the
/// calling thread (the rasteriser alone).
fn rasterise<M>(c: &mut Criterion<M>, group_name: &str)
where
    M: Measurement + Sync,
    M::Value: Send,
{
    let spec = BevSpec::default();
    let env = driven_batch(WORLDS, 60);
    let mut out = vec![0u8; WORLDS * spec.len()];
    let mut group = c.benchmark_group(group_name);
    group.throughput(Throughput::Elements(WORLDS as u64));
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("thread pool");
        group.bench_with_input(
            BenchmarkId::new("observe_bev_256_worlds", format!("{threads}_threads")),
            &threads,
            |b, _| pool.install(|| b.iter(|| env.observe_bev(&spec, black_box(&mut out)))),
        );
    }
    let mut one = vec![0u8; spec.len()];
    group.bench_function("render_256_worlds_serial", |b| {
        b.iter(|| {
            for i in 0..WORLDS {
                bev::render(env.world(i), &spec, black_box(&mut one));
            }
        })
    });
    group.finish();
}

fn bev_wall(c: &mut Criterion) {
    rasterise(c, "bev_wall");
}

fn bev_cpu(c: &mut Criterion<ProcessCpuTime>) {
    rasterise(c, "bev_cpu");
}

/// CPU time of all threads of this process, nanoseconds.
struct ProcessCpuTime;

static WALL: WallTime = WallTime;

fn process_cpu_ns() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

impl Measurement for ProcessCpuTime {
    type Intermediate = u64;
    type Value = u64;
    fn start(&self) -> u64 {
        process_cpu_ns()
    }
    fn end(&self, start: u64) -> u64 {
        process_cpu_ns().saturating_sub(start)
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, value: &u64) -> f64 {
        *value as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        WALL.formatter()
    }
}

criterion_group!(wall, bev_wall);
criterion_group! {
    name = cpu;
    config = Criterion::default().with_measurement(ProcessCpuTime);
    targets = bev_cpu
}
criterion_main!(cpu, wall);
