//! Learning core of deltaplan: a residual "delta" head on top of a frozen SFT planner, trained
//! with PPO + GAE. Final waypoints = SFT waypoints + delta, `|delta| <= max_delta`.
//!
//! Modules, in reading order:
//! - [`nn`]: flat-parameter MLP, batched forward, analytic backward, fast tanh, orthogonal init;
//! - [`optim`]: AdamW and global gradient-norm clipping (PyTorch semantics);
//! - [`dist`]: tanh-squashed diagonal Gaussian, exact log-probs, entropy, KL to the SFT policy;
//! - [`mod@gae`]: advantages with termination and truncation kept apart;
//! - [`actor_critic`]: the residual policy and value networks, sampling and deterministic inference;
//! - [`ppo`]: the PPO update: loss with analytic gradients, minibatch loop, statistics;
//! - [`checkpoint`]: atomic, validated safetensors + JSON files, weight hashes;
//! - [`scenarios`]: the training worlds' scenario distribution, shared by demos and refinement;
//! - [`dataset`]: recorded expert demonstrations (DART-style noise), split by episode;
//! - [`planner`]: the frozen-planner seam ([`FrozenPlanner`], [`PlannerError`]) refinement builds on;
//! - [`sft`]: the behaviour-cloned planner (encoder -> z -> waypoint head) and its training.

pub mod actor_critic;
pub mod checkpoint;
pub mod dataset;
pub mod dist;
pub mod distributed;
pub mod error;
pub mod gae;
pub mod nn;
pub mod optim;
pub mod phases;
pub mod planner;
mod policy_input;
pub mod ppo;
pub mod refine;
pub mod rollout;
pub mod scenarios;
pub mod sft;
mod simd;

pub use actor_critic::{
    ActOutput, ActWorkspace, ActorCritic, ActorCriticConfig, DEFAULT_LOG_STD_INIT,
};
pub use dataset::{record_demonstrations, Dataset, DemoConfig, DemoNoise, EpisodeInfo, Recording};
pub use error::{LearnError, Result};
pub use gae::{gae, GaeSteps};
pub use nn::{fast_tanh, InferWorkspace, Mlp, MlpInit, MlpWorkspace, OutputInit, TensorView};
pub use optim::{clip_grad_norm, AdamW, AdamWConfig};
pub use planner::{FrozenPlanner, PlannerError};
pub use ppo::{
    explained_variance, LossStats, MinibatchRef, Ppo, PpoConfig, RolloutBatch, UpdateStats,
};
pub use scenarios::{TrainScenarios, TrainWorld};
pub use sft::{
    train_sft, EpochStats, SftArch, SftLoss, SftPlanner, SftReport, SftTrainConfig, SftWorkspace,
};
