//! Refinement across processes: workers answering through messages give the one-process
//! refinement's bits, and a worker of another run, a stale answer or a damaged one is refused
//! by name.

use deltaplan_learn::dataset::{record_demonstrations, DemoConfig, Recording};
use deltaplan_learn::distributed::{DistributedRefiner, RolloutWorker, Workers};
use deltaplan_learn::refine::{Learner, RefineConfig, Refinement, Refiner};
use deltaplan_learn::scenarios::TrainScenarios;
use deltaplan_learn::sft::{train_sft, SftPlanner, SftTrainConfig};
use deltaplan_learn::Result;
use deltaplan_sim::{Family, SimConfig};

fn small_sft() -> SftPlanner {
    let demos = Recording {
        sim: SimConfig::default(),
        seed: 3,
        scenarios: TrainScenarios {
            families: vec![Family::Merge, Family::CutIn],
            ..Default::default()
        },
        demos: DemoConfig {
            n_envs: 16,
            steps: 60,
            ..Default::default()
        },
    };
    let ds = record_demonstrations(&demos, |_| {}).unwrap();
    let cfg = SftTrainConfig {
        hidden: vec![32],
        z_dim: 16,
        head_hidden: vec![],
        epochs: 1,
        patience: None,
        ..Default::default()
    };
    train_sft(&cfg, &ds, 0, |_| {}).unwrap().0
}

fn tiny() -> RefineConfig {
    let mut cfg = RefineConfig {
        num_envs: 6,
        rollout_steps: 24,
        iterations: 3,
        hidden: vec![16],
        ..Default::default()
    };
    cfg.ppo.num_minibatches = 2;
    cfg.ppo.critic_warmup_iters = 1;
    cfg
}

/// Changes a round of answers before the learner reads them; may keep earlier ones.
type Tamper = fn(&mut Vec<Vec<u8>>, &mut Option<Vec<Vec<u8>>>);

/// In-process workers; `tamper` may change the answers before the learner reads them.
struct Local<'a> {
    workers: Vec<RolloutWorker<'a, SftPlanner>>,
    tamper: Tamper,
    kept: Option<Vec<Vec<u8>>>,
}

impl Workers for Local<'_> {
    fn collect(&mut self, request: &[u8]) -> Result<Vec<Vec<u8>>> {
        let mut answers = self
            .workers
            .iter_mut()
            .map(|w| w.collect(request))
            .collect::<Result<Vec<_>>>()?;
        (self.tamper)(&mut answers, &mut self.kept);
        Ok(answers)
    }
    fn snapshots(&mut self) -> Result<Vec<Vec<u8>>> {
        let mut snaps = self
            .workers
            .iter()
            .map(|w| w.snapshot())
            .collect::<Result<Vec<_>>>()?;
        (self.tamper)(&mut snaps, &mut None);
        Ok(snaps)
    }
    fn restore(&mut self, env: &[u8]) -> Result<()> {
        self.workers.iter_mut().try_for_each(|w| w.restore(env))
    }
}

fn local<'a>(sft: &'a SftPlanner, seed: u64, tamper: Tamper) -> Local<'a> {
    let (sim, scenarios) = (SimConfig::default(), TrainScenarios::default());
    let workers = [4..6, 0..4]
        .into_iter()
        .map(|w| RolloutWorker::new(tiny(), sim, &scenarios, sft, seed, w).unwrap())
        .collect();
    Local {
        workers,
        tamper,
        kept: None,
    }
}

fn learner(sft: &SftPlanner) -> Learner {
    Learner::new(
        tiny(),
        SimConfig::default(),
        TrainScenarios::default(),
        sft,
        2,
    )
    .unwrap()
}

#[test]
fn workers_behind_messages_refine_to_the_single_process_bytes() {
    let sft = small_sft();
    let dir = std::env::temp_dir().join(format!("deltaplan-distributed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut single = Refiner::new(
        tiny(),
        SimConfig::default(),
        TrainScenarios::default(),
        &sft,
        2,
    )
    .unwrap();
    let mut spread = DistributedRefiner::new(learner(&sft), local(&sft, 2, |_, _| {}));
    for _ in 0..3 {
        let (a, b) = (single.iterate().unwrap(), spread.iterate().unwrap());
        assert_eq!(a.driving_score.to_bits(), b.driving_score.to_bits());
        assert_eq!(a.policy_loss.to_bits(), b.policy_loss.to_bits());
    }
    let (a, b) = (
        dir.join("single.safetensors"),
        dir.join("spread.safetensors"),
    );
    single.save(&a).unwrap();
    spread.save(&b).unwrap();
    assert!(
        std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
        "checkpoints differ"
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn a_worker_of_another_run_a_stale_or_a_damaged_answer_is_refused() {
    let sft = small_sft();
    // Workers built with seed 3 for a learner of seed 2.
    let err = DistributedRefiner::new(learner(&sft), local(&sft, 3, |_, _| {}))
        .iterate()
        .unwrap_err()
        .to_string();
    assert!(err.contains("seed 2") && err.contains("seed 3"), "{err}");
    // The first iteration's answers replayed at the second.
    let stale = |answers: &mut Vec<Vec<u8>>, kept: &mut Option<Vec<Vec<u8>>>| match kept {
        Some(old) => *answers = old.clone(),
        None => *kept = Some(answers.clone()),
    };
    let mut r = DistributedRefiner::new(learner(&sft), local(&sft, 2, stale));
    r.iterate().unwrap();
    let err = r.iterate().unwrap_err().to_string();
    assert!(
        err.contains("answers iteration 0") && err.contains("at iteration 1"),
        "{err}"
    );
    // One flipped byte in a rollout's numbers.
    let flip = |answers: &mut Vec<Vec<u8>>, _: &mut Option<Vec<Vec<u8>>>| {
        let a = &mut answers[0];
        let at = a.len() - 100;
        a[at] ^= 0x10;
    };
    let err = DistributedRefiner::new(learner(&sft), local(&sft, 2, flip))
        .iterate()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("a worker's rollout part") && err.contains("hash"),
        "{err}"
    );
    // A missing worker leaves a gap in the worlds.
    let drop_one = |answers: &mut Vec<Vec<u8>>, _: &mut Option<Vec<Vec<u8>>>| {
        answers.remove(0);
    };
    let err = DistributedRefiner::new(learner(&sft), local(&sft, 2, drop_one))
        .iterate()
        .unwrap_err()
        .to_string();
    assert!(err.contains("the refinement needs worlds 0..6"), "{err}");
    // A missing worker's snapshot: the checkpoint is refused, not written short.
    let mut r = DistributedRefiner::new(learner(&sft), local(&sft, 2, drop_one));
    let path = std::env::temp_dir().join(format!(
        "deltaplan-short-{}.safetensors",
        std::process::id()
    ));
    let err = r.save(&path).unwrap_err().to_string();
    assert!(err.contains("hold 4 of the 6 worlds"), "{err}");
    assert!(!path.exists());
}
