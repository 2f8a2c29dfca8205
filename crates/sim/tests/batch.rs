//! Batched stepping: bit-identical across thread counts, auto-reset semantics, and no heap
//! allocation in the per-step path (BEV rasters included).

use deltaplan_sim::batch::StepBuffers;
use deltaplan_sim::bev::{self, BevSpec};
use deltaplan_sim::spec::{Difficulty, Family};
use deltaplan_sim::{
    expert_plan, observe, BatchEnv, ScenarioSpec, SimConfig, SnapshotError, World, OBS_DIM,
};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);
thread_local! {
    // Only the measuring thread counts: other tests run concurrently in this process.
    static COUNT_ON: Cell<bool> = const { Cell::new(false) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if COUNT_ON.with(Cell::get) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        if COUNT_ON.with(Cell::get) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `steps` expert-driven steps of a 24-world training batch inside a pool of `threads`
/// threads and returns every output bit.
fn rollout(threads: usize, steps: usize) -> (Vec<u32>, usize) {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        let cfg = SimConfig::default();
        let n = 24;
        let mut env = BatchEnv::train(cfg, n, 42, Family::ALL.to_vec(), Difficulty::default());
        let mut buf = StepBuffers::new(n);
        let mut actions = vec![0.0; n * cfg.action_dim()];
        let mut bits = Vec::new();
        let mut episodes = 0;
        for t in 0..steps {
            env.expert_actions(&mut actions);
            // Perturb the plans a little so the egos do not all drive perfectly.
            for (k, a) in actions.iter_mut().enumerate() {
                *a += 0.3 * (((k * 7919 + t * 104_729) % 1000) as f32 / 1000.0 - 0.5);
            }
            env.step(&actions, &mut buf);
            bits.extend(buf.obs.iter().map(|x| x.to_bits()));
            bits.extend(buf.reward.iter().map(|x| x.to_bits()));
            bits.extend(buf.terminated.iter().map(|&x| u32::from(x)));
            bits.extend(buf.truncated.iter().map(|&x| u32::from(x)));
            episodes += buf
                .terminated
                .iter()
                .zip(&buf.truncated)
                .filter(|(a, b)| **a || **b)
                .count();
        }
        (bits, episodes)
    })
}

#[test]
fn same_seed_same_bits_for_one_and_two_threads() {
    let (one, episodes) = rollout(1, 400);
    let (two, _) = rollout(2, 400);
    assert!(
        episodes > 5,
        "the run must cross episode boundaries (auto-reset): {episodes}"
    );
    assert_eq!(one.len(), two.len());
    assert!(one == two, "batch results differ between 1 and 2 threads");
    // A different seed gives a different run (the comparison above is not vacuous).
    let cfg = SimConfig::default();
    let a = BatchEnv::train(cfg, 4, 42, Family::ALL.to_vec(), Difficulty::default());
    let b = BatchEnv::train(cfg, 4, 43, Family::ALL.to_vec(), Difficulty::default());
    let (mut oa, mut ob) = (vec![0.0; 4 * OBS_DIM], vec![0.0; 4 * OBS_DIM]);
    a.observe(&mut oa);
    b.observe(&mut ob);
    assert_ne!(oa, ob);
}

#[test]
fn world_step_observe_bev_and_expert_do_not_allocate() {
    let cfg = SimConfig::default();
    let spec = BevSpec::default();
    let mut raster = vec![0u8; spec.len()];
    for family in Family::ALL {
        let mut w = World::new(cfg);
        w.reset(ScenarioSpec {
            family,
            seed: 5,
            difficulty: Difficulty::default(),
        });
        let mut plan = vec![0.0; cfg.action_dim()];
        let mut obs = vec![0.0; OBS_DIM];
        // Warm-up: the first step sizes the reusable buffers.
        expert_plan(&w, &mut plan);
        w.step(&plan);
        ALLOCS.store(0, Ordering::SeqCst);
        COUNT_ON.with(|c| c.set(true));
        for _ in 0..150 {
            expert_plan(&w, &mut plan);
            if w.step(&plan).end != deltaplan_sim::EndReason::Running {
                break;
            }
            observe(&w, &mut obs);
            bev::render(&w, &spec, &mut raster);
        }
        COUNT_ON.with(|c| c.set(false));
        assert!(
            raster.iter().any(|&x| x != 0),
            "{family:?}: an empty raster"
        );
        assert_eq!(
            ALLOCS.load(Ordering::SeqCst),
            0,
            "{family:?} allocated in the step path"
        );
    }
}

#[test]
fn final_obs_and_reset_on_episode_end() {
    // One fixed scenario driven by a plan that brakes to a stop: the ego is blocked and the
    // episode terminates; in training mode the world resets and the next obs differs from the
    // final one.
    let cfg = SimConfig {
        blocked_seconds: 2.0,
        ..Default::default()
    };
    let n = 2;
    let mut env = BatchEnv::train(cfg, n, 1, vec![Family::Curvy], Difficulty::default());
    let mut buf = StepBuffers::new(n);
    let stop = vec![0.0; n * cfg.action_dim()];
    let mut ended = false;
    for _ in 0..200 {
        env.step(&stop, &mut buf);
        if buf.terminated[0] {
            ended = true;
            assert_eq!(env.finished(0).end, deltaplan_sim::EndReason::Blocked);
            assert!(!buf.truncated[0], "termination and truncation are distinct");
            assert!(buf.reward[0] <= -cfg.reward.terminal_penalty + 1.0);
            // Final observation: standing still (speed feature 0). New episode: moving again.
            assert_eq!(buf.final_obs[0], 0.0);
            assert!(buf.obs[0] > 0.0);
            break;
        }
    }
    assert!(ended);
}

#[test]
fn snapshot_restore_continues_bit_for_bit() {
    let cfg = SimConfig::default();
    let n = 6;
    let run = |env: &mut BatchEnv, steps: usize| {
        let mut buf = StepBuffers::new(n);
        let mut actions = vec![0.0; n * cfg.action_dim()];
        let mut bits = Vec::new();
        for _ in 0..steps {
            env.expert_actions(&mut actions);
            env.step(&actions, &mut buf);
            bits.extend(buf.obs.iter().chain(&buf.reward).map(|x| x.to_bits()));
        }
        bits
    };
    let mut a = BatchEnv::train(cfg, n, 9, Family::ALL.to_vec(), Difficulty::default());
    run(&mut a, 350);
    let snap = a.snapshot();
    let tail_a = run(&mut a, 200);
    let mut b = BatchEnv::train(cfg, n, 9, Family::ALL.to_vec(), Difficulty::default());
    b.restore(&snap).unwrap();
    let tail_b = run(&mut b, 200);
    assert!(tail_a == tail_b, "restored batch diverged");
    // A snapshot of another seed or size is refused with a message that says why.
    let mut c = BatchEnv::train(cfg, n, 10, Family::ALL.to_vec(), Difficulty::default());
    let err = c.restore(&snap).unwrap_err();
    assert_eq!(
        err,
        SnapshotError::OtherBatch {
            snapshot_seed: 9,
            snapshot_worlds: n,
            seed: 10,
            worlds: n
        }
    );
    assert!(err.to_string().contains("seed 9 with 6 worlds"), "{err}");
    let mut partial = snap.clone();
    partial.histories[2].push(0.5);
    let err = b.restore(&partial).unwrap_err();
    assert_eq!(
        err,
        SnapshotError::PartialPlan {
            floats: snap.histories[2].len() + 1,
            action_dim: cfg.action_dim()
        }
    );
}

#[test]
fn mixed_training_difficulty_spans_its_range() {
    let cfg = SimConfig::default();
    let lo = Difficulty::default();
    let hi = lo.harder();
    let env = BatchEnv::train_mixed(cfg, 64, 3, Family::ALL.to_vec(), (lo, hi));
    let t: Vec<f32> = (0..64)
        .map(|i| {
            let d = env.world(i).spec.difficulty;
            // Every knob sits at the same fraction t of the way from lo to hi.
            let t = (d.curvature - lo.curvature) / (hi.curvature - lo.curvature);
            let t2 = (d.traffic_density - lo.traffic_density)
                / (hi.traffic_density - lo.traffic_density);
            assert!((t - t2).abs() < 1e-4);
            d.validate().unwrap();
            t
        })
        .collect();
    assert!(t.iter().all(|&x| (0.0..=1.0).contains(&x)));
    assert!(t.iter().cloned().fold(1.0, f32::min) < 0.15);
    assert!(t.iter().cloned().fold(0.0, f32::max) > 0.85);
}

/// Worlds 0..10 and 10..24 built as two parts step exactly as the same worlds of the whole
/// 24-world batch (across auto-resets), and a part restores from its slice of the whole batch's
/// snapshot: what a rollout split across machines relies on.
#[test]
fn parts_of_a_batch_play_the_whole_batchs_worlds() {
    let cfg = SimConfig::default();
    let (n, split, a) = (24, 10, cfg.action_dim());
    let range = (Difficulty::default(), Difficulty::default().harder());
    let families = Family::ALL.to_vec();
    let mut whole = BatchEnv::train_mixed(cfg, n, 7, families.clone(), range);
    let mut parts = [
        BatchEnv::train_part(cfg, 0..split, 7, families.clone(), range),
        BatchEnv::train_part(cfg, split..n, 7, families.clone(), range),
    ];
    assert_eq!(parts[1].first_world(), split);
    let mut buf = StepBuffers::new(n);
    let mut part_bufs = [StepBuffers::new(split), StepBuffers::new(n - split)];
    let mut actions = vec![0.0; n * a];
    let mut resets = 0;
    for t in 0..300 {
        whole.expert_actions(&mut actions);
        for (k, x) in actions.iter_mut().enumerate() {
            *x += 0.4 * (((k * 7919 + t * 104_729) % 1000) as f32 / 1000.0 - 0.5);
        }
        whole.step(&actions, &mut buf);
        parts[0].step(&actions[..split * a], &mut part_bufs[0]);
        parts[1].step(&actions[split * a..], &mut part_bufs[1]);
        let joined = |f: fn(&StepBuffers) -> Vec<u32>| {
            let mut v = f(&part_bufs[0]);
            v.extend(f(&part_bufs[1]));
            v
        };
        let obs_bits = |b: &StepBuffers| b.obs.iter().map(|x| x.to_bits()).collect();
        let reward_bits = |b: &StepBuffers| b.reward.iter().map(|x| x.to_bits()).collect();
        let ends = |b: &StepBuffers| {
            b.terminated
                .iter()
                .zip(&b.truncated)
                .map(|(&x, &y)| u32::from(x) * 2 + u32::from(y))
                .collect()
        };
        assert!(
            joined(obs_bits) == obs_bits(&buf),
            "step {t}: observations differ"
        );
        assert!(
            joined(reward_bits) == reward_bits(&buf),
            "step {t}: rewards differ"
        );
        assert!(joined(ends) == ends(&buf), "step {t}: episode ends differ");
        resets += buf
            .terminated
            .iter()
            .zip(&buf.truncated)
            .filter(|(x, y)| **x || **y)
            .count();
    }
    assert!(
        resets > 3,
        "the worlds must cross episode boundaries: {resets}"
    );
    // Labels name the world's index in the whole batch.
    use deltaplan_sim::env::VecEnv;
    assert!(VecEnv::world_label(&parts[1], 0).starts_with("world 10 "));
    // A fresh second part restored from its slice of the whole snapshot continues as the whole.
    let snap = whole.snapshot();
    let mut restored = BatchEnv::train_part(cfg, split..n, 7, families, range);
    restored
        .restore(&deltaplan_sim::EnvSnapshot {
            seed: snap.seed,
            episodes: snap.episodes[split..].to_vec(),
            histories: snap.histories[split..].to_vec(),
        })
        .unwrap();
    let (mut mine, mut theirs) = (vec![0.0; (n - split) * OBS_DIM], vec![0.0; n * OBS_DIM]);
    restored.observe(&mut mine);
    whole.observe(&mut theirs);
    assert!(
        mine == theirs[split * OBS_DIM..],
        "the restored part differs from the whole"
    );
}
