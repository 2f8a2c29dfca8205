//! Prints a trace of the expert driving one scenario: `cargo run --example trace -- FAMILY SEED`.
use deltaplan_sim::spec::{Difficulty, Family, Split};
use deltaplan_sim::{expert_plan, ScenarioSpec, SimConfig, World};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let family = Family::ALL
        .into_iter()
        .find(|f| f.name() == args.get(1).map(String::as_str).unwrap_or("curvy"))
        .expect("family");
    let k: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(0);
    let fi = Family::ALL.iter().position(|&f| f == family).unwrap() as u64;
    let spec = ScenarioSpec {
        family,
        seed: Split::Eval.seed_base() + fi * 1_000_003 + k,
        difficulty: Difficulty::default(),
    };
    let mut cfg = SimConfig::default();
    if let Some(t) = std::env::var("TTC").ok().and_then(|s| s.parse().ok()) {
        cfg.reward.ttc_threshold = t;
    }
    let mut w = World::new(cfg);
    w.reset(spec);
    let mut plan = vec![0.0; cfg.action_dim()];
    let mut trail = deltaplan_sim::render::Trail::default();
    let svg_at: Option<u32> = std::env::var("SVG_AT").ok().and_then(|s| s.parse().ok());
    println!(
        "route_len {:.1} limit_steps {}",
        w.route_len, w.time_limit_steps
    );
    loop {
        expert_plan(&w, &mut plan);
        let a = deltaplan_sim::expert::expert_accel(&w);
        let r = w.step(&plan);
        trail.record(&w);
        if svg_at == Some(w.step_count) {
            let svg = deltaplan_sim::render::render_svg(&w, &trail, "trace", true);
            std::fs::write("/tmp/trace.svg", svg).expect("write /tmp/trace.svg");
        }
        if w.step_count.is_multiple_of(10) || r.end != deltaplan_sim::EndReason::Running {
            let near: Vec<String> = w
                .agents
                .iter()
                .filter(|a| {
                    a.active
                        && (a.pos - w.ego.center(&cfg.vehicle)).norm()
                            < std::env::var("NEAR")
                                .ok()
                                .and_then(|s| s.parse().ok())
                                .unwrap_or(30.0)
                })
                .map(|a| {
                    format!(
                        "(p{} s{:.0} v{:.1} y{})",
                        a.path,
                        a.s,
                        a.v,
                        u8::from(a.yields_to_ego)
                    )
                })
                .collect();
            println!(
                "t {:5.1} s {:6.1} lat {:5.2} v {:5.2} a_exp {:5.2} allowed {:5.2} r {:6.3} {:?} {}",
                w.time(),
                w.route_s,
                w.route_lat,
                w.ego.v,
                a,
                w.allowed_speed(w.route_s),
                r.reward,
                r.end,
                near.join(" ")
            );
        }
        if r.end != deltaplan_sim::EndReason::Running {
            break;
        }
    }
}
