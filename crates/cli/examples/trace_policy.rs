//! Traces one evaluation episode of the SFT and refined planners of a run directory:
//! `cargo run --release --example trace_policy -- DIR FAMILY INDEX [PER_FAMILY]`.
use deltaplan_learn::refine::{load_policy, ResidualPlanner};
use deltaplan_learn::sft::{SftPlanner, SftWorkspace};
use deltaplan_sim::{Difficulty, Family, SimConfig, Split, World, OBS_DIM};
use std::path::Path;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = Path::new(&args[1]);
    let family = Family::ALL
        .into_iter()
        .find(|f| f.name() == args[2])
        .expect("family");
    let index: usize = args[3].parse().expect("index");
    let per: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(20);
    let split = if std::env::var("SPLIT").as_deref() == Ok("hard") {
        Split::Hard
    } else {
        Split::Eval
    };
    let spec = split
        .suite(&Family::ALL, per, Difficulty::default())
        .into_iter()
        .filter(|s| s.family == family)
        .nth(index)
        .expect("spec");
    let sft = SftPlanner::load(&dir.join("sft.safetensors")).expect("sft");
    let pol = load_policy(&dir.join("rl.safetensors"), &sft).expect("rl");
    let cfg = SimConfig::default();
    for use_rl in [false, true] {
        let mut w = World::new(cfg);
        w.reset(spec);
        let mut obs = vec![0.0; OBS_DIM];
        let mut plan = vec![0.0; cfg.action_dim()];
        let mut z = vec![0.0; sft.z_dim()];
        let mut sft_plan = vec![0.0; cfg.action_dim()];
        let mut ws = SftWorkspace::new();
        let mut rp = ResidualPlanner::new(&sft, &pol.ac, pol.ramp);
        println!("=== {}", if use_rl { "RL" } else { "SFT" });
        loop {
            deltaplan_sim::observe(&w, &mut obs);
            sft.forward(&obs, &mut ws, &mut z, &mut sft_plan).unwrap();
            if use_rl {
                rp.plan(&obs, &mut plan).unwrap();
            } else {
                plan.copy_from_slice(&sft_plan);
            }
            let r = w.step(&plan);
            if w.step_count.is_multiple_of(10) || r.end != deltaplan_sim::EndReason::Running {
                let light = &obs[120..125];
                let near: Vec<String> = w
                    .agents
                    .iter()
                    .filter(|a| a.active && (a.pos - w.ego.center(&cfg.vehicle)).norm() < 15.0)
                    .map(|a| {
                        let p = a.pos.to_frame(
                            w.ego.center(&cfg.vehicle),
                            deltaplan_sim::geom::Vec2::from_angle(w.ego.yaw),
                        );
                        format!("({:.1},{:.1} v{:.1})", p.x, p.y, a.v)
                    })
                    .collect();
                println!(
                    "{} t {:5.1} s {:6.1} v {:5.2} a {:5.2} light {:?} d {:5.1} | sft x1s {:6.2} exec x1s {:6.2} y1s {:5.2} {:?}",
                    near.join(""), w.time(), w.route_s, w.ego.v, w.ego.accel, &light[..4].iter().map(|x| *x as u8).collect::<Vec<_>>(), light[4] * 50.0,
                    sft_plan[8], plan[8], plan[9], r.end
                );
            }
            if r.end != deltaplan_sim::EndReason::Running {
                break;
            }
        }
    }
}
