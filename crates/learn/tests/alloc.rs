//! Steady state allocates nothing: after warm-up, PPO minibatch steps (loss + backward + clip +
//! AdamW), whole updates and batched inference make no heap allocation of their own, on any
//! thread. The only allocations left are matrixmultiply's internal packing buffers (one
//! SIMD-aligned buffer per sgemm call, which its API does not let a caller supply); they are
//! told apart by their >= 32-byte alignment (everything this crate allocates is f32/f64/usize).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use deltaplan_learn::{
    ActOutput, ActWorkspace, ActorCritic, ActorCriticConfig, OutputInit, Ppo, PpoConfig,
    RolloutBatch,
};
use rand::{RngExt, SeedableRng};

struct Counting;
/// Allocations with ordinary alignment (this crate, rayon, std).
static ALLOCS: AtomicUsize = AtomicUsize::new(0);
/// SIMD-aligned allocations (matrixmultiply's packing buffers).
static ALIGNED: AtomicUsize = AtomicUsize::new(0);

fn count(layout: Layout) {
    if layout.align() >= 32 {
        ALIGNED.fetch_add(1, Ordering::Relaxed);
    } else {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: forwards to the system allocator, only counting calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(layout);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn steady_state_minibatch_update_and_inference_do_not_allocate() {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    pool.install(|| {
        let mut rng = rand_pcg::Pcg64::seed_from_u64(0);
        let (d, a, n) = (32, 8, 256);
        let mut cfg = ActorCriticConfig::new(d, a, &[64, 64], 0.5);
        cfg.actor_output = OutputInit::Orthogonal { gain: 0.01 };
        let ac = ActorCritic::new(&cfg, &mut rng).unwrap();
        let obs: Vec<f32> = (0..n * d).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let mut bufs = [
            vec![0.0; n * a],
            vec![0.0; n * a],
            vec![0.0; n],
            vec![0.0; n],
        ];
        let mut ws = ActWorkspace::new();
        let mut act = |ac: &ActorCritic, rng: &mut rand_pcg::Pcg64, bufs: &mut [Vec<f32>; 4]| {
            let [u, delta, logp, value] = bufs;
            let out = ActOutput {
                u,
                delta,
                logp,
                value,
            };
            ac.sample(&obs, rng, &mut ws, out).unwrap();
        };
        act(&ac, &mut rng, &mut bufs);
        let rollout = RolloutBatch {
            obs: obs.clone(),
            u: bufs[0].clone(),
            logp: bufs[2].clone(),
            advantages: (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect(),
            returns: bufs[3].iter().map(|v| v + 0.5).collect(),
            values: bufs[3].clone(),
            expert: Vec::new(),
        };
        let mut ppo = Ppo::new(PpoConfig::cleanrl(), ac, 100).unwrap();
        let mb = rollout.as_minibatch();
        let step = |ppo: &mut Ppo| {
            ppo.minibatch_loss_and_grads(mb, 0.01).unwrap();
            ppo.ac.clip_grad_norm(0.5);
            ppo.ac.optimizer_step(&mut ppo.optim, false).unwrap();
        };
        // Warm-up sizes every buffer.
        for _ in 0..3 {
            step(&mut ppo);
            ppo.update(&rollout, &mut rng).unwrap();
            act(&ppo.ac, &mut rng, &mut bufs);
        }
        let (before, aligned_before) = (
            ALLOCS.load(Ordering::SeqCst),
            ALIGNED.load(Ordering::SeqCst),
        );
        for _ in 0..10 {
            step(&mut ppo);
        }
        let after_steps = ALLOCS.load(Ordering::SeqCst);
        for _ in 0..3 {
            ppo.update(&rollout, &mut rng).unwrap();
        }
        let after_updates = ALLOCS.load(Ordering::SeqCst);
        for _ in 0..10 {
            act(&ppo.ac, &mut rng, &mut bufs);
        }
        let after_act = ALLOCS.load(Ordering::SeqCst);
        let sgemm_buffers = ALIGNED.load(Ordering::SeqCst) - aligned_before;
        println!("sgemm packing buffers during the checks: {sgemm_buffers}");
        assert!(sgemm_buffers > 0, "the counter sees the allocator");
        assert_eq!(after_steps - before, 0, "allocations in 10 minibatch steps");
        assert_eq!(after_updates - after_steps, 0, "allocations in 3 updates");
        assert_eq!(
            after_act - after_updates,
            0,
            "allocations in 10 act() calls"
        );
    });
}
