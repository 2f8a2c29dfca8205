//! `deltaplan`: record expert demonstrations, train the SFT planner, refine it with PPO,
//! evaluate in closed loop, and report. `deltaplan run` does every stage with embedded defaults.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};

use deltaplan_eval::{Metric, Policy};
use deltaplan_sim::Split;

use deltaplan::config::Config;
use deltaplan::sumo_eval::SumoEgo;
use deltaplan::{pipeline, serve};

#[derive(Parser)]
#[command(
    name = "deltaplan",
    version,
    about = "RL refinement of an imitation-learned driving planner"
)]
struct Cli {
    /// TOML configuration file (defaults are embedded; `deltaplan config` prints them).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Override any configuration field, e.g. `--set refine.iterations=20` (repeatable).
    #[arg(long = "set", global = true, value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Seed of every stage (overrides the config's `seed`).
    #[arg(long, global = true)]
    seed: Option<u64>,
    /// Output directory: each stage reads and writes its files here.
    #[arg(long, global = true, default_value = "runs/default")]
    out: PathBuf,
    /// An ONNX planner (its spec in the model's metadata or in FILE.toml beside it), or another
    /// run's sft.safetensors, to refine and evaluate in place of this run's SFT planner (the
    /// `planner` setting).
    #[arg(long, global = true, value_name = "FILE.onnx|sft.safetensors")]
    planner: Option<PathBuf>,
    /// Worker threads (0: all cores). Results are identical for a given thread count.
    #[arg(long, global = true, default_value_t = 0)]
    threads: usize,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum PolicyArg {
    Expert,
    Sft,
    Rl,
}

impl From<PolicyArg> for Policy {
    fn from(p: PolicyArg) -> Policy {
        match p {
            PolicyArg::Expert => Policy::Expert,
            PolicyArg::Sft => Policy::Sft,
            PolicyArg::Rl => Policy::Rl,
        }
    }
}

/// Who `evaluate` evaluates: a policy, or (in SUMO) SUMO's own driver model.
#[derive(Clone, Copy, ValueEnum)]
enum EvalPolicyArg {
    /// The privileged expert (in SUMO: the route-following expert, through deltaplan's
    /// controller).
    Expert,
    Sft,
    Rl,
    /// SUMO's own driver model driving the ego (with --world sumo only): the demonstrator of
    /// a run trained in SUMO.
    SumoDriver,
}

#[derive(Clone, Copy, ValueEnum)]
enum ExportArg {
    Sft,
    Rl,
}

#[derive(Clone, Copy, ValueEnum)]
enum ServePolicyArg {
    Sft,
    Rl,
}

#[derive(Clone, Copy, ValueEnum)]
enum SplitArg {
    Eval,
    Hard,
}

impl From<SplitArg> for Split {
    fn from(s: SplitArg) -> Split {
        match s {
            SplitArg::Eval => Split::Eval,
            SplitArg::Hard => Split::Hard,
        }
    }
}

/// Which simulator a command drives in.
#[derive(Clone, Copy, ValueEnum)]
enum WorldArg {
    /// deltaplan's own simulator.
    Builtin,
    /// SUMO (crates/sumo; `pip install eclipse-sumo` into .venv).
    Sumo,
}

#[derive(Subcommand)]
enum Command {
    /// Every stage in order (record, train-sft, refine, evaluate, report), resuming where a
    /// previous run of the same configuration stopped.
    Run,
    /// Record expert demonstrations to OUT/demos.safetensors.
    Record,
    /// Train the SFT planner by behaviour cloning to OUT/sft.safetensors.
    TrainSft,
    /// Refine the SFT planner with PPO; checkpoints to OUT/rl.safetensors every
    /// `checkpoint_every` iterations, at the end and on Ctrl-C.
    Refine,
    /// Evaluate a policy in closed loop on a split; writes OUT/eval/SPLIT_POLICY.json (with
    /// `--world sumo`: in SUMO on held-out networks, OUT/eval/sumo_SPLIT_POLICY.json, where
    /// `--policy sumo-driver` evaluates SUMO's own driver model).
    Evaluate {
        #[arg(long, value_enum)]
        policy: EvalPolicyArg,
        #[arg(long, value_enum, default_value = "eval")]
        split: SplitArg,
        #[arg(long, value_enum, default_value = "builtin")]
        world: WorldArg,
        /// With `--world sumo`: a network of a real place instead of the generated held-out
        /// ones (repeatable): `resco:NAME` (sumo-rl's Cologne/Ingolstadt scenarios with their
        /// demand) or `carla:TOWN` (py123d's CARLA maps through netconvert).
        #[arg(long = "network")]
        networks: Vec<String>,
    },
    /// Compare two evaluation files of the same split (paired differences, B minus A).
    Compare {
        a: PathBuf,
        b: PathBuf,
        /// Only this metric (repeatable; default: every metric): driving_score,
        /// route_completion, infraction_penalty, collision_rate, offroad_rate, red_light_rate,
        /// failure_rate, comfort_pass_rate, mean_speed, nuplan_score.
        #[arg(long = "metric")]
        metrics: Vec<Metric>,
    },
    /// Render one evaluation episode to SVG for each policy, at one crop and scale; with two
    /// policies also a filmstrip around where they diverge and their speed and acceleration
    /// (OUT/figures/episodes/SPLIT_FAMILY_SEED_*.svg).
    Render {
        /// A policy to render (repeatable: `--policy sft --policy rl`).
        #[arg(long = "policy", value_enum, required = true)]
        policies: Vec<PolicyArg>,
        #[arg(long, value_enum, default_value = "eval")]
        split: SplitArg,
        /// Scenario family (curvy, hard_brake, cut_in, intersection, merge).
        #[arg(long)]
        family: String,
        /// Index of the scenario within the family's suite.
        #[arg(long, default_value_t = 0)]
        index: usize,
    },
    /// Write the BEV raster of an evaluation scenario, driven by the expert for STEP steps, as
    /// a PNG (OUT/figures/bev/; the raster of `demos.bev`, or the default one).
    RenderBev {
        #[arg(long, value_enum, default_value = "eval")]
        split: SplitArg,
        /// Scenario family (curvy, hard_brake, cut_in, intersection, merge).
        #[arg(long)]
        family: String,
        /// Index of the scenario within the family's suite.
        #[arg(long, default_value_t = 0)]
        index: usize,
        /// Simulation steps the expert drives before the raster is taken.
        #[arg(long, default_value_t = 0)]
        step: usize,
    },
    /// Write the report from the evaluation files (OUT/report.md, report.json, figures/).
    Report,
    /// Export a planner as one ONNX file: `--policy sft` the built-in SFT planner, `--policy rl`
    /// the refined planner (frozen planner + bounded residual, the frozen planner's inputs).
    Export {
        #[arg(long, value_enum)]
        policy: ExportArg,
        /// Where to write it (default OUT/export/<policy>.onnx).
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Serve a planner over NVlabs alpasim's egodriver gRPC contract until Ctrl-C, for
    /// runtimes that speak it (alpasim, CARLA through autoware_carla_scenario,
    /// `carla-driver-interface demo`). The configuration is the run's run.toml unless
    /// --config is given; --planner FILE.onnx serves (or, with rl, refines on) that planner.
    Serve {
        /// The run directory whose planner is served (default: --out).
        #[arg(long)]
        run: Option<PathBuf>,
        /// `sft`: the frozen planner (built-in SFT, or --planner); `rl`: refined, with its residual.
        #[arg(long, value_enum, default_value = "rl")]
        policy: ServePolicyArg,
        /// Address to listen on (port 0: a free port; the bound address is printed).
        #[arg(long, default_value = "127.0.0.1:50051")]
        listen: SocketAddr,
        /// The road's speed limit in m/s (the contract carries none).
        #[arg(long, default_value_t = deltaplan_serve::Assumptions::default().speed_limit)]
        speed_limit: f32,
        /// The ego lane's width in metres (the contract carries none).
        #[arg(long, default_value_t = deltaplan_serve::Assumptions::default().lane_width)]
        lane_width: f32,
    },
    /// Print the effective configuration as TOML (every field is a setting; derived values and
    /// unset optional settings follow as comments).
    Config,
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = real_main() {
        eprintln!("error: {e:#}");
        std::process::exit(match e.downcast_ref::<pipeline::Interrupted>() {
            Some(_) => 130,
            None => 1,
        });
    }
}

fn real_main() -> Result<()> {
    let cli = Cli::parse();
    if cli.threads > 0 {
        rayon::ThreadPoolBuilder::new()
            .num_threads(cli.threads)
            .build_global()?;
    }
    if let Command::Serve {
        run,
        policy,
        listen,
        speed_limit,
        lane_width,
    } = &cli.command
    {
        let run = run.as_deref().unwrap_or(&cli.out);
        let mut cfg = serve::run_config(cli.config.as_deref(), &cli.sets, cli.seed, run)?;
        if let Some(p) = &cli.planner {
            cfg.planner = Some(p.clone());
        }
        if !(speed_limit.is_finite() && *speed_limit > 0.0) {
            anyhow::bail!("--speed-limit must be a positive number of m/s, not {speed_limit}");
        }
        if !(lane_width.is_finite() && *lane_width > 0.0) {
            anyhow::bail!("--lane-width must be a positive number of metres, not {lane_width}");
        }
        pipeline::install_interrupt_handler();
        return serve::serve(
            &cfg,
            &serve::ServeRequest {
                run,
                policy: match policy {
                    ServePolicyArg::Sft => Policy::Sft,
                    ServePolicyArg::Rl => Policy::Rl,
                },
                listen: *listen,
                assumptions: deltaplan_serve::Assumptions {
                    speed_limit: *speed_limit,
                    lane_width: *lane_width,
                },
            },
        );
    }
    let mut cfg = Config::load(cli.config.as_deref(), &cli.sets, cli.seed)?;
    if let Some(p) = cli.planner {
        cfg.planner = Some(p);
    }
    if let (Some(p), Command::Record | Command::TrainSft) = (&cfg.planner, &cli.command) {
        anyhow::bail!(
            "this run refines the given planner {}: record and train-sft make the built-in \
             planner; drop --planner (or the `planner` setting) to train one",
            p.display()
        );
    }
    let out = cli.out;
    pipeline::install_interrupt_handler();
    match cli.command {
        Command::Config => {
            print!("{}", cfg.to_annotated_toml());
            Ok(())
        }
        Command::Run => pipeline::run_all(&cfg, &out),
        Command::Record => {
            pipeline::guard(&cfg, &out).and_then(|_lock| pipeline::record(&cfg, &out))
        }
        Command::TrainSft => {
            pipeline::guard(&cfg, &out).and_then(|_lock| pipeline::train_sft(&cfg, &out))
        }
        Command::Refine => {
            pipeline::guard(&cfg, &out).and_then(|_lock| pipeline::refine(&cfg, &out))
        }
        Command::Evaluate {
            policy,
            split,
            world,
            networks,
        } => {
            let _lock = pipeline::guard(&cfg, &out)?;
            let policy = match policy {
                EvalPolicyArg::Expert => SumoEgo::Policy(Policy::Expert),
                EvalPolicyArg::Sft => SumoEgo::Policy(Policy::Sft),
                EvalPolicyArg::Rl => SumoEgo::Policy(Policy::Rl),
                EvalPolicyArg::SumoDriver => SumoEgo::SumoDriver,
            };
            let path = match (world, policy) {
                (WorldArg::Builtin, _) if !networks.is_empty() => {
                    anyhow::bail!("--network needs --world sumo")
                }
                (WorldArg::Builtin, SumoEgo::SumoDriver) => {
                    anyhow::bail!("--policy sumo-driver needs --world sumo")
                }
                (WorldArg::Builtin, SumoEgo::Policy(p)) => {
                    pipeline::evaluate(&cfg, &out, p, split.into())?
                }
                (WorldArg::Sumo, ego) => {
                    pipeline::evaluate_in_sumo(&cfg, &out, ego, split.into(), &networks)?
                }
            };
            println!("wrote {}", path.display());
            Ok(())
        }
        Command::Compare { a, b, metrics } => pipeline::compare(&a, &b, &metrics),
        Command::Render {
            policies,
            split,
            family,
            index,
        } => {
            let policies: Vec<Policy> = policies.into_iter().map(Policy::from).collect();
            pipeline::render(&cfg, &out, &policies, split.into(), &family, index)
        }
        Command::RenderBev {
            split,
            family,
            index,
            step,
        } => {
            let path = pipeline::render_bev(&cfg, &out, split.into(), &family, index, step)?;
            println!("wrote {}", path.display());
            Ok(())
        }
        Command::Export { policy, file } => {
            let what = match policy {
                ExportArg::Sft => pipeline::ExportWhat::Sft,
                ExportArg::Rl => pipeline::ExportWhat::Refined,
            };
            let path = pipeline::export(&cfg, &out, what, file)?;
            println!("wrote {}", path.display());
            Ok(())
        }
        Command::Serve { .. } => unreachable!("served above"),
        Command::Report => {
            let _lock = pipeline::guard(&cfg, &out)?;
            let (path, _) = pipeline::report(&cfg, &out, None)?;
            println!("report: {}", path.display());
            Ok(())
        }
    }
}
