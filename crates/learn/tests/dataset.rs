//! Recorded demonstrations: determinism, label correctness by independent re-simulation,
//! noise injection, the on-disk format and its error messages, and the episode-level split.

use std::collections::BTreeSet;

use deltaplan_learn::checkpoint::save_tensors;
use deltaplan_learn::dataset::{
    dataset_path, record_demonstrations, Dataset, DemoConfig, DemoNoise, Recording,
};
use deltaplan_learn::scenarios::TrainScenarios;
use deltaplan_sim::{expert_plan, observe, SimConfig, World, OBS_DIM};

fn small(seed: u64, noise_prob: f32) -> Recording {
    Recording {
        sim: SimConfig::default(),
        seed,
        scenarios: TrainScenarios::default(),
        demos: DemoConfig {
            n_envs: 6,
            steps: 200,
            noise: DemoNoise {
                prob: noise_prob,
                ..DemoNoise::default()
            },
        },
    }
}

fn err_text<T: std::fmt::Debug>(r: deltaplan_learn::Result<T>) -> String {
    r.expect_err("expected an error").to_string()
}

#[test]
fn recording_is_deterministic_across_thread_counts() {
    let cfg = small(3, 0.5);
    let run = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| record_demonstrations(&cfg, |_| {}).unwrap())
    };
    let a = run(1);
    let b = run(2);
    assert_eq!(a.n_samples(), 6 * 200);
    assert!(
        a == b,
        "same seed must give identical tensors for 1 and 2 threads"
    );
    // Another seed gives other data.
    let c = record_demonstrations(&small(4, 0.5), |_| {}).unwrap();
    assert_ne!(a.obs, c.obs);
}

/// Replays each recorded episode in a fresh `World` built from its scenario spec, executing the
/// recorded plans, and checks that every recorded observation and every label (the expert plan)
/// is what the simulator and the expert give at that state, bit for bit.
#[test]
fn labels_are_the_expert_plan_at_the_recorded_state() {
    let cfg = small(11, 0.5);
    let ds = record_demonstrations(&cfg, |_| {}).unwrap();
    let a = ds.action_dim();
    let mut noisy_seen = 0;
    let mut clean_seen = 0;
    let mut max_dev = 0.0f32;
    for (e, info) in ds.episodes.iter().enumerate() {
        let samples: Vec<usize> = (0..ds.n_samples())
            .filter(|&k| ds.episode[k] as usize == e)
            .collect();
        if samples.is_empty() {
            continue;
        }
        let spec = deltaplan_sim::ScenarioSpec {
            family: info.family,
            seed: info.seed,
            difficulty: info.difficulty,
        };
        let mut w = World::new(cfg.sim);
        w.reset(spec);
        let mut obs = vec![0.0f32; OBS_DIM];
        let mut plan = vec![0.0f32; a];
        for (t, &k) in samples.iter().enumerate() {
            assert_eq!(
                ds.step[k] as usize, t,
                "steps of episode {e} must be consecutive"
            );
            observe(&w, &mut obs);
            assert_eq!(obs.as_slice(), ds.obs_row(k), "obs of episode {e} step {t}");
            expert_plan(&w, &mut plan);
            assert_eq!(
                plan.as_slice(),
                ds.action_row(k),
                "label of episode {e} step {t}"
            );
            let exec = &ds.executed[k * a..(k + 1) * a];
            if info.noisy {
                let dev = exec
                    .iter()
                    .zip(&plan)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0.0f32, f32::max);
                max_dev = max_dev.max(dev);
            } else {
                assert_eq!(exec, plan.as_slice(), "clean episodes execute the label");
            }
            w.step(exec);
        }
        if info.noisy {
            noisy_seen += 1;
        } else {
            clean_seen += 1;
        }
    }
    assert!(
        noisy_seen > 0 && clean_seen > 0,
        "{noisy_seen} noisy, {clean_seen} clean"
    );
    // Default noise: lateral 0.5 m std, speed 10 %: deviations of tens of cm at least.
    assert!(max_dev > 0.2, "noise too small to matter: {max_dev}");
}

#[test]
fn noise_moves_the_ego_off_the_expert_path() {
    // Same scenarios; one recording perturbed in every episode, one never.
    let clean = record_demonstrations(&small(5, 0.0), |_| {}).unwrap();
    let noisy = record_demonstrations(&small(5, 1.0), |_| {}).unwrap();
    assert!(clean.episodes.iter().all(|e| !e.noisy));
    assert!(noisy.episodes.iter().all(|e| e.noisy));
    // Lateral offset from the route (obs[4], in half lane widths) spreads wider with noise.
    let rms = |ds: &Dataset| {
        let s: f64 = (0..ds.n_samples())
            .map(|k| f64::from(ds.obs_row(k)[4]).powi(2))
            .sum();
        (s / ds.n_samples() as f64).sqrt()
    };
    let (rc, rn) = (rms(&clean), rms(&noisy));
    assert!(
        rn > 2.0 * rc && rn > 0.05,
        "lateral offset rms: clean {rc}, noisy {rn}"
    );
}

#[test]
fn save_load_round_trip_and_errors() {
    let ds = record_demonstrations(&small(7, 0.5), |_| {}).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = ds.save(dir.path()).unwrap();
    assert_eq!(path, dataset_path(dir.path()));
    assert!(
        !path.with_extension("safetensors.tmp").exists(),
        "temp file left behind"
    );
    let back = Dataset::load(dir.path()).unwrap();
    assert!(back == ds, "round trip must be exact");

    // Missing.
    let msg = err_text(Dataset::load(&dir.path().join("nowhere")));
    assert!(
        msg.contains("not found") && msg.contains("deltaplan record"),
        "{msg}"
    );

    // Truncated.
    let bytes = std::fs::read(&path).unwrap();
    let cut = dir.path().join("cut");
    std::fs::create_dir(&cut).unwrap();
    std::fs::write(dataset_path(&cut), &bytes[..bytes.len() / 2]).unwrap();
    let msg = err_text(Dataset::load(&cut));
    assert!(
        msg.contains("truncated or corrupt") && msg.contains("deltaplan record"),
        "{msg}"
    );

    // Another kind of file.
    let other = dir.path().join("ckpt.safetensors");
    let data = [0.0f32; 4];
    save_tensors(
        &other,
        &[("x".into(), vec![4], &data)],
        &serde_json::json!({"kind": "sft_planner", "schema_version": 1}),
    )
    .unwrap();
    let msg = err_text(Dataset::load(&other));
    assert!(
        msg.contains("SFT planner checkpoint") && msg.contains("not a dataset"),
        "{msg}"
    );

    // Future schema version.
    save_tensors(
        &other,
        &[("x".into(), vec![4], &data)],
        &serde_json::json!({"kind": "demonstrations", "schema_version": 3}),
    )
    .unwrap();
    let msg = err_text(Dataset::load(&other));
    assert!(
        msg.contains("schema version 3") && msg.contains("reads version 2"),
        "{msg}"
    );

    // Other observation width (a simulator change since recording).
    let meta = serde_json::json!({"kind": "demonstrations", "schema_version": 2,
        "obs_dim": OBS_DIM + 3});
    save_tensors(&other, &[("x".into(), vec![4], &data)], &meta).unwrap();
    let msg = err_text(Dataset::load(&other));
    assert!(
        msg.contains("obs_dim") && msg.contains(&(OBS_DIM + 3).to_string()),
        "{msg}"
    );
}

#[test]
fn split_is_by_episode_and_deterministic() {
    let ds = record_demonstrations(&small(9, 0.5), |_| {}).unwrap();
    let (train, val) = ds.split(0.25, 1).unwrap();
    assert_eq!(train.len() + val.len(), ds.n_samples());
    let ep = |idx: &[usize]| -> BTreeSet<u32> { idx.iter().map(|&k| ds.episode[k]).collect() };
    let (et, ev) = (ep(&train), ep(&val));
    assert!(
        et.is_disjoint(&ev),
        "an episode is on both sides of the split"
    );
    assert!(!ev.is_empty() && !et.is_empty());
    let frac = ev.len() as f64 / ds.n_episodes() as f64;
    assert!((0.1..=0.4).contains(&frac), "val episode fraction {frac}");
    assert_eq!(ds.split(0.25, 1).unwrap(), (train.clone(), val.clone()));
    assert_ne!(ds.split(0.25, 2).unwrap().1, val);
    assert!(ds.split(0.0, 1).is_err() && ds.split(1.0, 1).is_err());
}
