//! SumoEnv behind the environment seam, with real SUMO processes: the expert's evaluation is
//! bit-identical when rerun, and a SUMO process that is killed or stops answering is
//! restarted with a logged message while the evaluation completes; one that will not start
//! again ends the evaluation with an error saying why.

mod common;

use deltaplan_sim::config::SimConfig;
use deltaplan_sim::{ExpertEnv, ResumableEnv, SnapshotError, StepBuffers, VecEnv};
use deltaplan_sumo::locate::SumoBinaries;
use deltaplan_sumo::netgen::{generate, NetKind};
use deltaplan_sumo::{NetContext, SumoConfig, SumoEnv, SumoScenarios};
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

/// Every `tracing` message of this test binary, from every thread.
fn captured_logs() -> &'static Mutex<Vec<u8>> {
    static LOGS: OnceLock<&'static Mutex<Vec<u8>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs: &'static Mutex<Vec<u8>> = Box::leak(Box::new(Mutex::new(Vec::new())));
        struct Sink(&'static Mutex<Vec<u8>>);
        impl Write for Sink {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                std::io::stderr().write_all(b)?;
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || Sink(logs))
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");
        logs
    })
}

fn env(bins: &SumoBinaries, name: &str, seeds: Vec<u64>, timeout: f32) -> SumoEnv {
    let dir = common::scratch(name);
    let files = generate(bins, &dir, NetKind::Grid, 5, 1500).unwrap();
    let net = Arc::new(NetContext::load(files).unwrap());
    let sumo_cfg = SumoConfig {
        timeout_seconds: timeout,
        ..Default::default()
    };
    SumoEnv::new(
        SimConfig::default(),
        sumo_cfg,
        &[net],
        bins,
        SumoScenarios::Fixed(seeds),
        0,
    )
    .unwrap()
}

/// Runs the expert until every world is idle; `fault` is called once at `fault_step`.
fn run_expert(
    env: &mut SumoEnv,
    fault_step: usize,
    mut fault: impl FnMut(&SumoEnv),
) -> Vec<String> {
    let mut plans = vec![0.0; env.num_envs() * env.action_dim()];
    let mut buf = StepBuffers::for_env(env);
    let mut step = 0;
    while !env.all_idle() {
        if step == fault_step {
            fault(env);
        }
        env.expert_actions(&mut plans);
        env.step(&plans, &mut buf);
        step += 1;
        assert!(step < 5000, "the episodes must end");
    }
    (0..env.num_envs())
        .map(|i| format!("{:?}", env.finished(i)))
        .collect()
}

#[test]
fn expert_evaluation_reruns_bit_identically() {
    let Some(bins) = common::sumo_or_skip("expert_evaluation_reruns_bit_identically") else {
        return;
    };
    let mut a = env(&bins, "rerun_a", vec![11, 12, 13], 30.0);
    let ra = run_expert(&mut a, usize::MAX, |_| {});
    let mut b = env(&bins, "rerun_b", vec![11, 12, 13], 30.0);
    let rb = run_expert(&mut b, usize::MAX, |_| {});
    assert_eq!(ra, rb);
    for i in 0..3 {
        let s = a.finished(i);
        assert!(s.steps > 50 && s.route_completion > 50.0, "{s:?}");
        assert_eq!(
            s.collisions_vehicle + s.offroad,
            0,
            "the expert fails: {s:?}"
        );
    }
    assert_eq!(a.restarts(), [0, 0, 0]);
}

fn signal(sig: &str, pid: u32) {
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

#[test]
fn a_killed_sumo_is_restarted_and_its_episode_rerun() {
    let Some(bins) = common::sumo_or_skip("a_killed_sumo_is_restarted_and_its_episode_rerun")
    else {
        return;
    };
    let logs = captured_logs();
    let mut clean = env(&bins, "kill_clean", vec![21, 22], 30.0);
    let expected = run_expert(&mut clean, usize::MAX, |_| {});
    let mut e = env(&bins, "kill", vec![21, 22], 30.0);
    let mut killed = 0;
    let got = run_expert(&mut e, 30, |env| {
        killed = env.sumo_pid(1).unwrap();
        signal("-KILL", killed);
    });
    assert_eq!(e.restarts(), [0, 1]);
    assert_ne!(e.sumo_pid(1), Some(killed));
    // The rerun episode is the same episode from its start: the same record as without the
    // fault.
    assert_eq!(got, expected);
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(
        text.contains(&format!(
            "SUMO world 1 (process {killed}, episode seed 22) failed"
        )),
        "{text}"
    );
}

#[test]
fn a_hung_sumo_times_out_and_is_restarted() {
    let Some(bins) = common::sumo_or_skip("a_hung_sumo_times_out_and_is_restarted") else {
        return;
    };
    let logs = captured_logs();
    let mut e = env(&bins, "hang", vec![31], 5.0);
    let mut stopped = 0;
    let t0 = std::time::Instant::now();
    run_expert(&mut e, 20, |env| {
        stopped = env.sumo_pid(0).unwrap();
        signal("-STOP", stopped);
    });
    // At least the stopped one (a loaded machine may time out a slow start too).
    assert!(e.restarts()[0] >= 1, "{:?}", e.restarts());
    assert!(e.finished(0).steps > 50, "{:?}", e.finished(0));
    assert!(t0.elapsed().as_secs() < 60);
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(
        text.contains(&format!(
            "SUMO world 0 (process {stopped}, episode seed 31) failed"
        )),
        "{text}"
    );
}

#[test]
fn training_worlds_reset_themselves_after_each_episode() {
    let Some(bins) = common::sumo_or_skip("training_worlds_reset_themselves") else {
        return;
    };
    let dir = common::scratch("train");
    let files = generate(&bins, &dir, NetKind::Spider, 9, 1500).unwrap();
    let net = Arc::new(NetContext::load(files).unwrap());
    let mut e = SumoEnv::new(
        SimConfig::default(),
        SumoConfig::default(),
        &[net],
        &bins,
        SumoScenarios::Train { seed: 4 },
        2,
    )
    .unwrap();
    let (n, ad, od) = (e.num_envs(), e.action_dim(), e.obs_dim());
    let mut plans = vec![0.0; n * ad];
    let mut buf = StepBuffers::for_env(&e);
    let mut ended = 0;
    for _ in 0..3000 {
        let seeds: Vec<u64> = (0..n).map(|i| e.scenario(i).seed).collect();
        e.expert_actions(&mut plans);
        e.step(&plans, &mut buf);
        for (i, &seed) in seeds.iter().enumerate() {
            if buf.terminated[i] || buf.truncated[i] {
                ended += 1;
                let s = e.finished(i);
                assert_eq!(s.seed, seed, "the record is the episode that ended");
                assert!(s.steps > 0 && s.route_completion > 0.0, "{s:?}");
                // The next episode started: a new training seed, and the observation is its
                // first (speed feature = the start speed of at most 8 m/s, /10).
                let next = e.scenario(i).seed;
                assert_ne!(next, seed);
                assert!(deltaplan_sim::Split::Train.contains(next));
                assert!(buf.obs[i * od] <= 0.8 + 1e-6, "{}", buf.obs[i * od]);
            }
        }
        if ended >= 3 {
            break;
        }
    }
    assert!(ended >= 3, "only {ended} episodes ended");
    assert!(e.restarts().iter().all(|&r| r == 0), "{:?}", e.restarts());
    assert!(!e.all_idle());
}

/// What a step returned, bit for bit.
fn step_bits(buf: &StepBuffers) -> Vec<u32> {
    let flags = buf
        .terminated
        .iter()
        .chain(&buf.truncated)
        .map(|&f| f as u32);
    buf.obs
        .iter()
        .chain(&buf.final_obs)
        .chain(&buf.reward)
        .map(|x| x.to_bits())
        .chain(flags)
        .collect()
}

#[test]
fn a_training_batch_resumes_bit_for_bit_from_a_snapshot() {
    let Some(bins) = common::sumo_or_skip("a_training_batch_resumes_bit_for_bit") else {
        return;
    };
    let dir = common::scratch("resume");
    let files = generate(&bins, &dir, NetKind::Spider, 9, 1500).unwrap();
    let net = Arc::new(NetContext::load(files).unwrap());
    let make = |seed| {
        SumoEnv::new(
            SimConfig::default(),
            SumoConfig::default(),
            &[Arc::clone(&net)],
            &bins,
            SumoScenarios::Train { seed },
            2,
        )
        .unwrap()
    };
    let mut a = make(4);
    let (n, ad) = (a.num_envs(), a.action_dim());
    let mut plans = vec![0.0; n * ad];
    let mut buf = StepBuffers::for_env(&a);
    // The expert's plans, bent a little by the step number, so they are not what a fresh
    // world's expert would plan anyway.
    let plan_at = |env: &SumoEnv, k: usize, plans: &mut [f32]| {
        env.expert_actions(plans);
        for (j, x) in plans.iter_mut().enumerate() {
            *x += 0.05 * ((k * 7 + j) % 5) as f32 - 0.1;
        }
    };
    let mut ended_before_snapshot = 0;
    for k in 0..450 {
        plan_at(&a, k, &mut plans);
        a.step(&plans, &mut buf);
        ended_before_snapshot += buf
            .terminated
            .iter()
            .chain(&buf.truncated)
            .filter(|&&f| f)
            .count();
    }
    assert!(
        ended_before_snapshot >= 1,
        "the replay must cross an episode's end"
    );
    let snap = a.snapshot();
    assert!(
        snap.histories.iter().all(|h| h.len() >= 100 * ad),
        "one process per world so far"
    );
    let mut expected = Vec::new();
    let mut recorded = Vec::new();
    for k in 450..700 {
        plan_at(&a, k, &mut plans);
        recorded.push(plans.clone());
        a.step(&plans, &mut buf);
        expected.push(step_bits(&buf));
    }

    // Another batch built the same way, moved on elsewhere first, then restored.
    let mut b = make(4);
    for k in 0..30 {
        plan_at(&b, k + 1000, &mut plans);
        b.step(&plans, &mut buf);
    }
    b.restore(&snap).unwrap();
    for (k, p) in recorded.iter().enumerate() {
        b.step(p, &mut buf);
        assert_eq!(
            step_bits(&buf),
            expected[k],
            "step {} after the restore",
            450 + k
        );
    }
    assert_eq!(b.restarts(), [0, 0]);

    // A snapshot of a batch with another seed is refused, naming both.
    let mut c = make(5);
    match c.restore(&snap) {
        Err(SnapshotError::OtherBatch {
            snapshot_seed: 4,
            seed: 5,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_sumo_that_will_not_start_again_ends_the_evaluation_with_the_reason() {
    let Some(bins) = common::sumo_or_skip("a_sumo_that_will_not_start_again") else {
        return;
    };
    use deltaplan_eval::drive::{drive_to_the_end, Driver};
    use deltaplan_eval::PlannerError;
    let dir = common::scratch("dead");
    let files = generate(&bins, &dir, NetKind::Grid, 5, 1500).unwrap();
    let net = Arc::new(NetContext::load(files.clone()).unwrap());
    let new_env = || {
        SumoEnv::new(
            SimConfig::default(),
            SumoConfig {
                timeout_seconds: 5.0,
                ..Default::default()
            },
            &[Arc::clone(&net)],
            &bins,
            SumoScenarios::Fixed(vec![41]),
            0,
        )
    };
    let mut e = new_env().unwrap();
    // The network file is damaged on disk, then SUMO is killed on the planner's 10th call:
    // every restart fails, and the evaluation stops with the reason instead of a panic.
    std::fs::write(&files.net, "<net> damaged").unwrap();
    let pid = e.sumo_pid(0).unwrap();
    let mut calls = 0;
    let mut planner = |_: &[f32], plans: &mut [f32]| -> Result<(), PlannerError> {
        calls += 1;
        if calls == 10 {
            signal("-KILL", pid);
        }
        plans.fill(0.0);
        Ok(())
    };
    let err = drive_to_the_end(&mut e, &mut Driver::Planner(&mut planner)).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("SUMO world 0 could not start episode seed 41 after 3 attempts"),
        "{text}"
    );
    // SUMO's exit is reported with the command that shows its own message.
    assert!(
        text.contains("exited before answering") && text.contains(&files.net.display().to_string()),
        "{text}"
    );
    assert_eq!(
        e.restarts(),
        [4],
        "the failed step, then three failed starts"
    );
    assert!(e.all_idle());
    // A new environment on the damaged network is refused the same way, at construction.
    let refused = new_env().err().map(|f| f.to_string()).unwrap_or_default();
    assert!(
        refused.contains("could not start episode seed 41 after 3 attempts"),
        "{refused}"
    );
}
