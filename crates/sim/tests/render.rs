//! SVG rendering produces a well-formed document showing what the world holds.

use deltaplan_sim::render::{render_svg, Trail};
use deltaplan_sim::spec::{Difficulty, Family};
use deltaplan_sim::{expert_plan, ScenarioSpec, SimConfig, World};

#[test]
fn intersection_episode_renders_to_valid_svg_with_every_object() {
    let cfg = SimConfig::default();
    let mut w = World::new(cfg);
    w.reset(ScenarioSpec {
        family: Family::Intersection,
        seed: 11,
        difficulty: Difficulty::default(),
    });
    let mut trail = Trail::default();
    let mut plan = vec![0.0; cfg.action_dim()];
    for _ in 0..60 {
        expert_plan(&w, &mut plan);
        w.step(&plan);
        trail.record(&w);
    }
    let svg = render_svg(&w, &trail, "intersection <seed 11>", true);
    let doc = roxmltree::Document::parse(&svg).expect("well-formed SVG");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "svg");
    let count = |tag: &str| root.children().filter(|n| n.has_tag_name(tag)).count();
    let active = w.agents.iter().filter(|a| a.active).count();
    // Vehicles, obstacles and the ego are polygons; lights are lines; plan points are circles.
    assert_eq!(count("polygon"), active + w.statics.len() + 1);
    assert_eq!(count("line"), 4);
    assert_eq!(count("circle"), cfg.horizon);
    // Lanes twice (surface, centre line), the route, and the trail.
    assert_eq!(count("polyline"), 2 * w.map.lanes.len() + 2);
    let trail_node = root
        .children()
        .rfind(|n| n.has_tag_name("polyline"))
        .unwrap();
    let points = trail_node
        .attribute("points")
        .unwrap()
        .split_whitespace()
        .count();
    assert_eq!(points, 60);
    // The title is escaped, not injected.
    assert!(svg.contains("intersection &lt;seed 11&gt;"));
}
