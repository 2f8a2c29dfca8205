//! Recorded demonstrations: determinism, label correctness by independent re-simulation,
//! noise injection, the on-disk format and its error messages, and the episode-level split.

use std::collections::BTreeSet;

use deltaplan_learn::checkpoint::{load_tensors_with_bytes, save_tensors, save_tensors_with_bytes};
use deltaplan_learn::dataset::{
    dataset_path, record_demonstrations, Dataset, DemoConfig, DemoNoise, Recording,
};
use deltaplan_learn::scenarios::TrainScenarios;
use deltaplan_sim::bev::{self, BevSpec};
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
            bev: None,
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
        &serde_json::json!({"kind": "demonstrations", "schema_version": 4}),
    )
    .unwrap();
    let msg = err_text(Dataset::load(&other));
    assert!(
        msg.contains("schema version 4") && msg.contains("reads version 3"),
        "{msg}"
    );

    // Other observation width (a simulator change since recording).
    let meta = serde_json::json!({"kind": "demonstrations", "schema_version": 3,
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

/// A 32 x 32 raster at 1.5 m/px: small enough to record quickly, large enough to see the road.
fn with_bev(seed: u64) -> Recording {
    let mut rec = small(seed, 0.5);
    rec.demos.steps = 60;
    rec.demos.bev = Some(BevSpec {
        height: 32,
        width: 32,
        metres_per_pixel: 1.5,
        behind_m: 12.0,
    });
    rec
}

/// Each recorded raster is the renderer's raster of the state its observation describes (the
/// episodes replayed in fresh worlds), the file keeps them bit for bit, and a recording without
/// rasters is the same recording as before (rasters add, they change nothing).
#[test]
fn bev_rasters_are_recorded_beside_the_observations() {
    let rec = with_bev(13);
    let spec = rec.demos.bev.unwrap();
    let ds = record_demonstrations(&rec, |_| {}).unwrap();
    let rasters = ds.bev.as_ref().expect("rasters recorded");
    assert_eq!(rasters.len(), ds.n_samples() * spec.len());
    let mut plain = rec.clone();
    plain.demos.bev = None;
    let without = record_demonstrations(&plain, |_| {}).unwrap();
    assert!(without.bev.is_none());
    assert!(
        without.obs == ds.obs && without.actions == ds.actions && without.episodes == ds.episodes
    );

    let a = ds.action_dim();
    let mut raster = vec![0u8; spec.len()];
    let mut checked = 0;
    for (e, info) in ds.episodes.iter().enumerate() {
        let mut w = World::new(rec.sim);
        w.reset(deltaplan_sim::ScenarioSpec {
            family: info.family,
            seed: info.seed,
            difficulty: info.difficulty,
        });
        for k in (0..ds.n_samples()).filter(|&k| ds.episode[k] as usize == e) {
            bev::render(&w, &spec, &mut raster);
            assert!(
                raster.as_slice() == ds.bev_row(k).unwrap(),
                "raster of episode {e} step {}",
                ds.step[k]
            );
            checked += 1;
            w.step(&ds.executed[k * a..(k + 1) * a]);
        }
    }
    assert_eq!(checked, ds.n_samples());

    let dir = tempfile::tempdir().unwrap();
    let path = ds.save(dir.path()).unwrap();
    let back = Dataset::load(dir.path()).unwrap();
    assert!(back == ds, "round trip must be exact");
    // What a Python reader sees: a uint8 tensor [N, C, H, W] and the channel names.
    let (meta, _, bytes) = load_tensors_with_bytes(&path, "demonstrations", 3).unwrap();
    assert_eq!(bytes["bev"].0, vec![ds.n_samples(), 9, 32, 32]);
    let channels: Vec<String> =
        serde_json::from_value(meta.json()["bev"]["channels"].clone()).unwrap();
    assert_eq!(channels, bev::CHANNELS);
    assert_eq!(meta.json()["bev"]["value"], "byte / 255");
}

/// A damaged or foreign raster tensor is refused, naming what is wrong.
#[test]
fn recorded_rasters_are_validated_on_load() {
    let rec = with_bev(17);
    let ds = record_demonstrations(&rec, |_| {}).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = ds.save(dir.path()).unwrap();
    let (meta, tensors, mut bytes) = load_tensors_with_bytes(&path, "demonstrations", 3).unwrap();
    let rewrite = |meta: &serde_json::Value, bytes: &deltaplan_learn::checkpoint::ByteTensorMap| {
        let f: Vec<(String, Vec<usize>, &[f32])> = tensors
            .iter()
            .map(|(k, (s, d))| (k.clone(), s.clone(), d.as_slice()))
            .collect();
        let b: Vec<(String, Vec<usize>, &[u8])> = bytes
            .iter()
            .map(|(k, (s, d))| (k.clone(), s.clone(), d.as_slice()))
            .collect();
        save_tensors_with_bytes(&path, &f, &b, meta).unwrap();
        err_text(Dataset::load(dir.path()))
    };
    let good = bytes.clone();
    // A mask byte that is neither 0 nor 255 (channel 0 of sample 3).
    let len = rec.demos.bev.unwrap().len();
    bytes.get_mut("bev").unwrap().1[3 * len + 5] = 7;
    let msg = rewrite(meta.json(), &bytes);
    assert!(
        msg.contains("sample 3") && msg.contains("`drivable`") && msg.contains("holds 7"),
        "{msg}"
    );
    // Another renderer's channels.
    let mut other = meta.json().clone();
    other["bev"]["channels"][1] = serde_json::json!("lanes");
    let msg = rewrite(&other, &good);
    assert!(msg.contains("channels") && msg.contains("lanes"), "{msg}");
    // Rasters of another size than the spec says.
    let mut wrong = good.clone();
    let (shape, data) = wrong.get_mut("bev").unwrap();
    shape[3] = 16;
    data.truncate(data.len() / 2);
    let msg = rewrite(meta.json(), &wrong);
    assert!(msg.contains("bev") && msg.contains("16"), "{msg}");
    // Rasters without a spec.
    let mut no_spec = meta.json().clone();
    no_spec["config"]["demos"]
        .as_object_mut()
        .unwrap()
        .remove("bev");
    let msg = rewrite(&no_spec, &good);
    assert!(msg.contains("no demos.bev spec"), "{msg}");
    // A spec but no rasters.
    let msg = rewrite(meta.json(), &Default::default());
    assert!(
        msg.contains("bev") && msg.contains("deltaplan record"),
        "{msg}"
    );
}

#[test]
fn bev_recording_settings_are_checked() {
    let mut rec = with_bev(1);
    rec.demos.bev.as_mut().unwrap().metres_per_pixel = 0.0;
    let msg = err_text(record_demonstrations(&rec, |_| {}));
    assert!(
        msg.contains("demos.bev") && msg.contains("metres_per_pixel"),
        "{msg}"
    );
    let mut rec = with_bev(1);
    rec.demos.n_envs = 1000;
    rec.demos.steps = 10_000;
    rec.demos.bev = Some(BevSpec::default());
    let msg = err_text(record_demonstrations(&rec, |_| {}));
    assert!(
        msg.contains("GiB") && msg.contains("fewer demos.steps"),
        "{msg}"
    );
}
