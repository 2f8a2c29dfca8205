//! PyTorch parity: replays `fixtures/ppo_parity.safetensors`, written by
//! `python/torch_parity.py` (CleanRL-semantics PPO in float32 PyTorch), and checks forward
//! outputs, loss terms, raw and clipped gradients, the global grad norm and parameters after two
//! AdamW steps, all within 1e-5 absolute.

use std::collections::HashMap;

use deltaplan_learn::{ActorCritic, ActorCriticConfig, MinibatchRef, OutputInit, Ppo, PpoConfig};
use rand::SeedableRng;
use safetensors::{Dtype, SafeTensors};

const TOL: f32 = 1e-5;

struct Fixture {
    tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
    meta: HashMap<String, String>,
}

impl Fixture {
    fn load() -> Fixture {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/ppo_parity.safetensors"
        );
        let bytes = std::fs::read(path).expect("fixture missing: run python/torch_parity.py");
        let (_, meta) = SafeTensors::read_metadata(&bytes).expect("bad header");
        let st = SafeTensors::deserialize(&bytes).expect("bad safetensors file");
        let tensors = st
            .tensors()
            .into_iter()
            .map(|(name, t)| {
                assert_eq!(t.dtype(), Dtype::F32, "{name}");
                let data = t
                    .data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                (name, (t.shape().to_vec(), data))
            })
            .collect();
        Fixture {
            tensors,
            meta: meta.metadata().clone().unwrap_or_default(),
        }
    }

    fn get(&self, name: &str) -> &[f32] {
        &self
            .tensors
            .get(name)
            .unwrap_or_else(|| panic!("no tensor {name}"))
            .1
    }

    fn num(&self, key: &str) -> f64 {
        self.meta[key]
            .parse()
            .unwrap_or_else(|_| panic!("metadata {key}"))
    }
}

fn assert_close(what: &str, got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let max = got
        .iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs())
        .fold(0.0f32, f32::max);
    assert!(max <= TOL, "{what}: max abs diff {max:e} > {TOL:e}");
    max
}

#[test]
fn ppo_minibatch_step_matches_pytorch() {
    let fx = Fixture::load();
    let dims: HashMap<String, usize> = serde_json::from_str(&fx.meta["dims"]).unwrap();
    let (d, h, a) = (dims["D"], dims["H"], dims["A"]);

    let mut cfg = ActorCriticConfig::new(d, a, &[h, h], 1.0);
    cfg.log_std_init = fx.num("log_std_init") as f32;
    cfg.actor_output = OutputInit::Orthogonal { gain: 0.5 };
    let mut ac = ActorCritic::new(&cfg, &mut rand_pcg::Pcg64::seed_from_u64(0)).unwrap();
    ac.ref_log_std.fill(fx.num("ref_log_std") as f32);
    let names: Vec<String> = ac.named_tensors().iter().map(|t| t.name.clone()).collect();
    for name in &names {
        let (shape, data) = &fx.tensors[&format!("init.{name}")];
        ac.set_tensor(name, shape, data).unwrap();
    }

    let ppo_cfg = PpoConfig {
        learning_rate: fx.num("lr"),
        anneal_lr: false,
        clip_coef: fx.num("clip_coef") as f32,
        vf_coef: fx.num("vf_coef") as f32,
        ent_coef: fx.num("ent_coef") as f32,
        clip_vloss: fx.meta["clip_vloss"] == "true",
        norm_adv: fx.meta["norm_adv"] == "true",
        max_grad_norm: fx.num("max_grad_norm") as f32,
        weight_decay: fx.num("weight_decay"),
        adam_eps: fx.num("adam_eps"),
        ..PpoConfig::cleanrl()
    };
    let beta = fx.num("beta") as f32;
    let mut ppo = Ppo::new(ppo_cfg, ac, 100).unwrap();

    // Forward: deterministic act gives u = mu and V(s).
    let obs = fx.get("batch.obs");
    let b = obs.len() / d;
    let (mut u, mut delta, mut logp, mut value) = (
        vec![0.0; b * a],
        vec![0.0; b * a],
        vec![0.0; b],
        vec![0.0; b],
    );
    ppo.ac
        .act_deterministic(
            obs,
            &mut Default::default(),
            deltaplan_learn::ActOutput {
                u: &mut u,
                delta: &mut delta,
                logp: &mut logp,
                value: &mut value,
            },
        )
        .unwrap();
    let mut report = vec![
        (
            "mu".to_string(),
            assert_close("mu", &u, fx.get("expected.mu")),
        ),
        (
            "value".into(),
            assert_close("value", &value, fx.get("expected.value")),
        ),
    ];

    let mb = MinibatchRef {
        obs,
        u: fx.get("batch.u"),
        old_logp: fx.get("batch.old_logp"),
        advantages: fx.get("batch.advantages"),
        returns: fx.get("batch.returns"),
        old_values: fx.get("batch.old_values"),
        expert: &[],
    };
    for step in 1..=2 {
        let want = fx.get(&format!("step{step}.stats"));
        let s = ppo.minibatch_loss_and_grads(mb, beta).unwrap();
        let got = s.as_array();
        report.push((
            format!("step{step} loss terms"),
            // The fixture's eight terms (PyTorch's loss has no expert guidance).
            assert_close(&format!("step{step} loss terms"), &got[..8], &want[..8]),
        ));
        let mut max_grad = 0.0f32;
        for t in ppo.ac.named_grads() {
            let what = format!("step{step}.grad.{}", t.name);
            max_grad = max_grad.max(assert_close(&what, t.data, fx.get(&what)));
        }
        report.push((format!("step{step} raw grads"), max_grad));
        let norm = ppo.ac.clip_grad_norm(ppo.cfg.max_grad_norm);
        report.push((
            format!("step{step} grad norm"),
            assert_close("grad norm", &[norm], &want[8..9]),
        ));
        let mut max_clipped = 0.0f32;
        for t in ppo.ac.named_grads() {
            let what = format!("step{step}.clipped_grad.{}", t.name);
            max_clipped = max_clipped.max(assert_close(&what, t.data, fx.get(&what)));
        }
        report.push((format!("step{step} clipped grads"), max_clipped));
        ppo.ac.optimizer_step(&mut ppo.optim, false).unwrap();
        let mut max_param = 0.0f32;
        for t in ppo.ac.named_tensors() {
            let what = format!("step{step}.param.{}", t.name);
            max_param = max_param.max(assert_close(&what, t.data, fx.get(&what)));
        }
        report.push((format!("step{step} params after AdamW"), max_param));
    }
    for (what, diff) in report {
        println!("parity {what:<28} max abs diff {diff:.3e}");
    }
}
