//! Refinement across processes: rollout workers, each holding a range of the training worlds
//! and its own copy of the frozen planner, and one learner that runs GAE and the PPO update
//! (the shape of a Ray job: actors collect, the driver learns).
//!
//! Per iteration the learner sends every worker a request (the policy's weights, every world's
//! action noise, the iteration, the ramp), each worker answers with its [`RolloutPart`], and the
//! learner learns from the parts put side by side. The messages are safetensors bytes with a content hash (the checkpoint
//! format), so any transport (Ray's object store, a socket, a file) carries them and a damaged
//! one is refused. Because the learner draws all the randomness and a rollout part is a pure
//! function of the weights, the noise and the worlds' global indices ([`crate::rollout`]), the
//! result is the one-process [`crate::refine::Refiner`]'s, bit for bit, given the same seed and
//! the learner's thread count.

use std::ops::Range;
use std::path::Path;
use std::time::Instant;

use deltaplan_sim::{BatchEnv, EnvSnapshot, SimConfig};
use deltaplan_stdx::seed;
use serde::{Deserialize, Serialize};

use crate::actor_critic::ActorCritic;
use crate::checkpoint::{decode_tensors, encode_tensors, take_tensor};
use crate::error::{LearnError, Result};
use crate::phases::PhaseSeconds;
use crate::planner::FrozenPlanner;
use crate::refine::{
    actor_critic_config, check_env_fits, load_actor_critic, planner_env, IterationStats, Learner,
    RefineConfig, Refinement,
};
use crate::rollout::{Collector, EndedEpisode, RolloutPart};
use crate::scenarios::TrainScenarios;

/// The rollout workers as the learner sees them: whatever carries the messages to them and
/// back (Ray actors behind Python callables, threads in a test).
pub trait Workers {
    /// Sends every worker the same request; returns their answers (any order).
    fn collect(&mut self, request: &[u8]) -> Result<Vec<Vec<u8>>>;
    /// Every worker's [`RolloutWorker::snapshot`] (any order).
    fn snapshots(&mut self) -> Result<Vec<Vec<u8>>>;
    /// Hands every worker the whole batch's state ([`encode_env`]); each restores its worlds.
    fn restore(&mut self, env: &[u8]) -> Result<()>;
}

/// A learner whose rollouts its [`Workers`] collect.
pub struct DistributedRefiner<W: Workers> {
    pub learner: Learner,
    workers: W,
}

impl<W: Workers> DistributedRefiner<W> {
    /// A fresh refinement; the workers must have been built for the same settings and seed.
    pub fn new(learner: Learner, workers: W) -> Self {
        DistributedRefiner { learner, workers }
    }
}

impl<W: Workers> Refinement for DistributedRefiner<W> {
    fn learner(&self) -> &Learner {
        &self.learner
    }

    fn learner_mut(&mut self) -> &mut Learner {
        &mut self.learner
    }

    fn iterate(&mut self) -> Result<IterationStats> {
        let started = Instant::now();
        self.learner.draw_noise();
        let request = encode_request(&self.learner)?;
        let answers = self.workers.collect(&request)?;
        let mut parts = answers
            .iter()
            .map(|a| decode_part(a, &self.learner))
            .collect::<Result<Vec<_>>>()?;
        let mut whole = RolloutPart::interleave(&mut parts)?;
        self.learner.learn(&mut whole, started)
    }

    fn save(&mut self, path: &Path) -> Result<()> {
        let mut parts = self
            .workers
            .snapshots()?
            .iter()
            .map(|b| decode_env(b, "a worker's snapshot"))
            .collect::<Result<Vec<_>>>()?;
        parts.sort_by_key(|p| p.first_world);
        let (mut snap, mut returns) = (
            EnvSnapshot {
                seed: self.learner.seed,
                episodes: Vec::new(),
                histories: Vec::new(),
            },
            Vec::new(),
        );
        for p in parts {
            if p.first_world != snap.episodes.len() || p.snapshot.seed != self.learner.seed {
                return Err(LearnError::Config(format!(
                    "the workers' snapshots do not cover the worlds in order (one starts at \
                     world {} after {} worlds, seed {}): every worker must hold the next range \
                     of worlds of the same run",
                    p.first_world,
                    snap.episodes.len(),
                    p.snapshot.seed
                )));
            }
            snap.episodes.extend(p.snapshot.episodes);
            snap.histories.extend(p.snapshot.histories);
            returns.extend(p.running_return);
        }
        if snap.episodes.len() != self.learner.cfg.num_envs {
            return Err(LearnError::Workers(format!(
                "their snapshots hold {} of the {} worlds: a worker is missing, nothing was saved",
                snap.episodes.len(),
                self.learner.cfg.num_envs
            )));
        }
        self.learner.save(path, &snap, &returns)
    }
}

/// A worker: worlds `worlds` of the training batch, the frozen planner, and a copy of the policy
/// that each request overwrites.
pub struct RolloutWorker<'a, P: FrozenPlanner> {
    collector: Collector<'a, P, BatchEnv>,
    ac: ActorCritic,
    cfg: RefineConfig,
    seed: u64,
    sft_hash: String,
    part: RolloutPart,
    /// This worker's rows of the request's noise, `[T, k, A]`.
    noise: Vec<f32>,
}

impl<'a, P: FrozenPlanner> RolloutWorker<'a, P> {
    /// Worlds `worlds` of the refinement of `planner` with these settings and seed.
    pub fn new(
        cfg: RefineConfig,
        sim: SimConfig,
        scenarios: &TrainScenarios,
        planner: &'a P,
        seed: u64,
        worlds: Range<usize>,
    ) -> Result<Self> {
        cfg.validate()?;
        if worlds.is_empty() || worlds.end > cfg.num_envs {
            return Err(LearnError::Config(format!(
                "a worker's worlds {}..{} must be a non-empty range inside 0..{} (refine.num_envs)",
                worlds.start, worlds.end, cfg.num_envs
            )));
        }
        let (first, k) = (worlds.start, worlds.len());
        let env = planner_env(scenarios, sim, worlds, seed, planner)?;
        check_env_fits(&env, k, planner)?;
        // The weights are overwritten by every request; the seed only shapes them.
        let ac = ActorCritic::new(&actor_critic_config(&cfg, planner), &mut seed::rng(0, 0))?;
        Ok(RolloutWorker {
            collector: Collector::new(planner, env, first).record_expert(cfg.ppo.expert_guided()),
            ac,
            cfg,
            seed,
            sft_hash: planner.weights_hash(),
            part: RolloutPart::default(),
            noise: Vec::new(),
        })
    }

    /// Answers a learner's request with this worker's rollout part. Fault point
    /// `worker:collect` (`deltaplan_stdx::fault`): a worker that dies on a request.
    pub fn collect(&mut self, request: &[u8]) -> Result<Vec<u8>> {
        deltaplan_stdx::fault::point(|| "worker:collect".into());
        let (meta, mut tensors, _) =
            decode_tensors(request, "a rollout request", REQUEST_KIND, MESSAGE_VERSION)?;
        let r: RequestInfo = meta.field("request")?;
        if r.seed != self.seed || r.sft_hash != self.sft_hash || r.config != self.cfg {
            return Err(LearnError::Config(format!(
                "the learner's run (seed {}, frozen planner {}...) is not this worker's (seed {}, \
                 frozen planner {}...) or their settings differ: build the workers from the \
                 learner's configuration and planner",
                r.seed,
                &r.sft_hash[..12.min(r.sft_hash.len())],
                self.seed,
                &self.sft_hash[..12.min(self.sft_hash.len())]
            )));
        }
        let shown = Path::new("a rollout request");
        load_actor_critic(&mut self.ac, &mut tensors, shown, REQUEST_KIND)?;
        let (t_len, n, a) = (self.cfg.rollout_steps, self.cfg.num_envs, self.ac.act_dim());
        let all = take_tensor(&mut tensors, shown, REQUEST_KIND, "noise", &[t_len, n, a])?;
        let (first, k) = (self.collector.first_world(), self.collector.worlds());
        self.noise.clear();
        for t in 0..t_len {
            self.noise
                .extend_from_slice(&all[(t * n + first) * a..(t * n + first + k) * a]);
        }
        self.collector.collect(
            &self.ac,
            &self.noise,
            r.iteration,
            self.cfg.rollout_steps,
            r.ramp,
            self.cfg.reward_scale,
            &mut self.part,
        )?;
        encode_part(&self.part, r.iteration)
    }

    /// This worker's worlds' state, for the learner's checkpoint.
    pub fn snapshot(&self) -> Result<Vec<u8>> {
        let env = self.collector.env();
        let snap = env.snapshot();
        encode_env_part(
            &snap,
            self.collector.running_return(),
            self.collector.first_world(),
        )
    }

    /// Restores this worker's worlds from the whole batch's state ([`encode_env`]).
    pub fn restore(&mut self, env: &[u8]) -> Result<()> {
        let whole = decode_env(env, "the learner's snapshot")?;
        let (first, k) = (self.collector.first_world(), self.collector.worlds());
        let n = whole.snapshot.episodes.len();
        if whole.first_world != 0 || first + k > n || whole.running_return.len() != n {
            return Err(LearnError::Config(format!(
                "the learner's snapshot holds {n} worlds from world {}; this worker needs worlds \
                 {first}..{}",
                whole.first_world,
                first + k
            )));
        }
        let part = EnvSnapshot {
            seed: whole.snapshot.seed,
            episodes: whole.snapshot.episodes[first..first + k].to_vec(),
            histories: whole.snapshot.histories[first..first + k].to_vec(),
        };
        self.collector.restore(&part)?;
        self.collector
            .set_running_return(&whole.running_return[first..first + k])
    }
}

/// The whole batch's state as the message [`Workers::restore`] hands on.
pub fn encode_env(snap: &EnvSnapshot, running_return: &[f32]) -> Result<Vec<u8>> {
    encode_env_part(snap, running_return, 0)
}

const REQUEST_KIND: &str = "rollout_request";
const PART_KIND: &str = "rollout_part";
const ENV_KIND: &str = "rollout_env";
/// Version 2: a rollout part carries the expert's corrections (empty when not recorded).
const MESSAGE_VERSION: u32 = 2;

/// What a request says besides the weights.
#[derive(Serialize, Deserialize)]
struct RequestInfo {
    iteration: usize,
    ramp: f32,
    seed: u64,
    sft_hash: String,
    config: RefineConfig,
}

fn encode_request(l: &Learner) -> Result<Vec<u8>> {
    let ac = &l.ppo.ac;
    let mut tensors: Vec<(String, Vec<usize>, &[f32])> = ac
        .named_tensors()
        .into_iter()
        .map(|t| (t.name, t.shape, t.data))
        .collect();
    let (t_len, n) = (l.cfg.rollout_steps, l.cfg.num_envs);
    tensors.push(("noise".into(), vec![t_len, n, ac.act_dim()], l.noise()));
    let meta = serde_json::json!({
        "kind": REQUEST_KIND,
        "schema_version": MESSAGE_VERSION,
        "request": RequestInfo {
            iteration: l.iteration,
            ramp: l.ramp(),
            seed: l.seed,
            sft_hash: l.sft_hash().to_string(),
            config: l.cfg.clone(),
        },
    });
    encode_tensors(&tensors, &[], &meta, || "the rollout request".into())
}

/// A part's scalars: what is not a tensor.
#[derive(Serialize, Deserialize)]
struct PartInfo {
    iteration: usize,
    first_world: usize,
    worlds: usize,
    steps: usize,
    ended: Vec<EndedRow>,
    residual_sum: Vec<f64>,
    seconds: PhaseSeconds,
}

/// [`EndedEpisode`] as JSON (floats round-trip exactly).
#[derive(Serialize, Deserialize)]
struct EndedRow(u32, u32, f32, f32, f32, bool, bool);

fn encode_part(p: &RolloutPart, iteration: usize) -> Result<Vec<u8>> {
    let (t, k) = (p.steps, p.worlds);
    let width = |v: &[f32]| v.len() / (t * k).max(1);
    let tensors: Vec<(String, Vec<usize>, &[f32])> = vec![
        ("x".into(), vec![t, k, width(&p.x)], &p.x),
        ("u".into(), vec![t, k, width(&p.u)], &p.u),
        ("logp".into(), vec![t, k], &p.logp),
        ("values".into(), vec![t, k], &p.values),
        ("rewards".into(), vec![t, k], &p.rewards),
        ("next_values".into(), vec![t, k], &p.next_values),
        ("expert".into(), vec![t, k, width(&p.expert)], &p.expert),
    ];
    let flags = |v: &[bool]| v.iter().map(|&b| u8::from(b)).collect::<Vec<u8>>();
    let (terminated, truncated) = (flags(&p.terminated), flags(&p.truncated));
    let bytes: Vec<(String, Vec<usize>, &[u8])> = vec![
        ("terminated".into(), vec![t, k], &terminated),
        ("truncated".into(), vec![t, k], &truncated),
    ];
    let info = PartInfo {
        iteration,
        first_world: p.first_world,
        worlds: k,
        steps: t,
        ended: p
            .ended
            .iter()
            .map(|e| {
                EndedRow(
                    e.step,
                    e.world,
                    e.episode_return,
                    e.driving_score,
                    e.route_completion,
                    e.collided,
                    e.offroad,
                )
            })
            .collect(),
        residual_sum: p.residual_sum.clone(),
        seconds: p.seconds,
    };
    let meta = serde_json::json!({
        "kind": PART_KIND,
        "schema_version": MESSAGE_VERSION,
        "part": info,
    });
    encode_tensors(&tensors, &bytes, &meta, || {
        format!(
            "the rollout part of worlds {}..{}",
            p.first_world,
            p.first_world + k
        )
    })
}

/// Reads a worker's answer, checking it is for the learner's iteration and has the shapes the
/// learner's settings imply.
fn decode_part(bytes: &[u8], l: &Learner) -> Result<RolloutPart> {
    let shown = "a worker's rollout part";
    let (meta, mut tensors, mut flags) = decode_tensors(bytes, shown, PART_KIND, MESSAGE_VERSION)?;
    let info: PartInfo = meta.field("part")?;
    let (t, k) = (info.steps, info.worlds);
    if info.iteration != l.iteration || t != l.cfg.rollout_steps || k == 0 {
        return Err(LearnError::Config(format!(
            "{shown} answers iteration {} with {t} steps of {k} worlds; the learner is at \
             iteration {} with {} steps",
            info.iteration, l.iteration, l.cfg.rollout_steps
        )));
    }
    let (d, a) = (l.ppo.ac.obs_dim(), l.ppo.ac.act_dim());
    let path = Path::new(shown);
    let mut take =
        |name: &str, shape: &[usize]| take_tensor(&mut tensors, path, PART_KIND, name, shape);
    let x = take("x", &[t, k, d])?;
    let u = take("u", &[t, k, a])?;
    let logp = take("logp", &[t, k])?;
    let values = take("values", &[t, k])?;
    let rewards = take("rewards", &[t, k])?;
    let next_values = take("next_values", &[t, k])?;
    let expert_width = if l.cfg.ppo.expert_guided() { a } else { 0 };
    let expert = take("expert", &[t, k, expert_width])?;
    let mut flag = |name: &str| -> Result<Vec<bool>> {
        let v: Vec<u8> = take_tensor(&mut flags, path, PART_KIND, name, &[t, k])?;
        Ok(v.into_iter().map(|b| b != 0).collect())
    };
    let (terminated, truncated) = (flag("terminated")?, flag("truncated")?);
    if info.residual_sum.len() != k {
        return Err(meta.incompatible(format!(
            "it holds {} residual sums for {k} worlds",
            info.residual_sum.len()
        )));
    }
    Ok(RolloutPart {
        first_world: info.first_world,
        worlds: k,
        steps: t,
        x,
        u,
        logp,
        values,
        rewards,
        next_values,
        terminated,
        truncated,
        expert,
        ended: info
            .ended
            .into_iter()
            .map(
                |EndedRow(step, world, ret, ds, rc, collided, offroad)| EndedEpisode {
                    step,
                    world,
                    episode_return: ret,
                    driving_score: ds,
                    route_completion: rc,
                    collided,
                    offroad,
                },
            )
            .collect(),
        residual_sum: info.residual_sum,
        seconds: info.seconds,
    })
}

/// A range of worlds' state: their snapshot and running returns.
struct EnvPart {
    first_world: usize,
    snapshot: EnvSnapshot,
    running_return: Vec<f32>,
}

fn encode_env_part(
    snap: &EnvSnapshot,
    running_return: &[f32],
    first_world: usize,
) -> Result<Vec<u8>> {
    let tensors: Vec<(String, Vec<usize>, &[f32])> = snap
        .histories
        .iter()
        .enumerate()
        .map(|(i, h)| (format!("env.history.{i}"), vec![h.len()], h.as_slice()))
        .chain([(
            "running_return".to_string(),
            vec![running_return.len()],
            running_return,
        )])
        .collect();
    let meta = serde_json::json!({
        "kind": ENV_KIND,
        "schema_version": MESSAGE_VERSION,
        "first_world": first_world,
        "seed": snap.seed,
        "episodes": snap.episodes,
    });
    encode_tensors(&tensors, &[], &meta, || {
        "the training worlds' snapshot".into()
    })
}

fn decode_env(bytes: &[u8], shown: &str) -> Result<EnvPart> {
    let (meta, mut tensors, _) = decode_tensors(bytes, shown, ENV_KIND, MESSAGE_VERSION)?;
    let episodes: Vec<u64> = meta.field("episodes")?;
    let n = episodes.len();
    let path = Path::new(shown);
    let running_return = take_tensor(&mut tensors, path, ENV_KIND, "running_return", &[n])?;
    let mut histories = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("env.history.{i}");
        let (_, data) = tensors.remove(&name).ok_or_else(|| {
            meta.incompatible(format!("it has no tensor `{name}` for its {n} worlds"))
        })?;
        histories.push(data);
    }
    Ok(EnvPart {
        first_world: meta.field("first_world")?,
        snapshot: EnvSnapshot {
            seed: meta.field("seed")?,
            episodes,
            histories,
        },
        running_return,
    })
}
