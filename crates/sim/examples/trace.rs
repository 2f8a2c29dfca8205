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
    // SPLIT=hard traces the hard split's scenario k.
    let split = match std::env::var("SPLIT").as_deref() {
        Ok("hard") => Split::Hard,
        _ => Split::Eval,
    };
    let spec = split.suite(&[family], k as usize + 1, Difficulty::default())[k as usize];
    let spec = ScenarioSpec {
        seed: split.seed_base() + fi * 1_000_003 + k,
        ..spec
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
    let mut filter = deltaplan_sim::metrics::ComfortFilter::default();
    loop {
        expert_plan(&w, &mut plan);
        let a = deltaplan_sim::expert::expert_accel(&w);
        let r = w.step(&plan);
        let bits = filter.push(&w.ego, cfg.dt);
        if bits != 0 {
            println!(
                "  comfort bits {bits:#b} at t {:.1}: accel {:.3} yaw rate {:.4} v {:.2}",
                w.time(),
                w.ego.accel,
                w.ego.yaw_rate,
                w.ego.v
            );
        }
        trail.record(&w);
        if svg_at == Some(w.step_count) {
            let svg = deltaplan_sim::render::render_svg(
                &w,
                &trail,
                "trace",
                deltaplan_sim::render::Crop::WholeMap,
            );
            std::fs::write("/tmp/trace.svg", svg).expect("write /tmp/trace.svg");
        }
        let every = std::env::var("EVERY")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(10);
        if w.step_count.is_multiple_of(every) || r.end != deltaplan_sim::EndReason::Running {
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
                "t {:5.1} s {:6.1} lat {:5.2} v {:5.2} a_exp {:5.2} a {:5.2} allowed {:5.2} r {:6.3} {:?} {}",
                w.time(),
                w.route_s,
                w.route_lat,
                w.ego.v,
                a,
                w.ego.accel,
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
    println!("comfort steps per bound {:?}", w.stats.comfort_steps);
}
