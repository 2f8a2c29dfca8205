//! SVG rendering produces a well-formed document showing what the world holds.

use deltaplan_sim::render::{render_svg, Crop, Trail};
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
    let svg = render_svg(&w, &trail, "intersection <seed 11>", Crop::WholeMap);
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

#[test]
fn a_fixed_crop_is_the_view_box_and_bounds_keep_their_aspect() {
    use deltaplan_sim::geom::Vec2;
    use deltaplan_sim::render::Bounds;
    let cfg = SimConfig::default();
    let mut w = World::new(cfg);
    w.reset(ScenarioSpec {
        family: Family::Curvy,
        seed: 3,
        difficulty: Difficulty::default(),
    });
    let crop = Bounds {
        min: Vec2::new(-10.0, -20.0),
        max: Vec2::new(90.0, 30.0),
    };
    let svg = render_svg(&w, &Trail::default(), "t", Crop::Fixed(crop));
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let view: Vec<f32> = doc
        .root_element()
        .attribute("viewBox")
        .unwrap()
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    // x, -max y, width, and the height plus the legend strip under the scene.
    assert_eq!(&view[..3], &[-10.0, -30.0, 100.0]);
    assert!(view[3] > 50.0 && view[3] < 60.0, "{view:?}");
    assert_eq!(crop.view_box(), "-10.00 -30.00 100.00 50.00");
    // Growing to 4:3 keeps the centre and the long side.
    let b = crop.with_aspect(4.0 / 3.0);
    assert_eq!((b.width(), b.height()), (100.0, 75.0));
    assert_eq!(b.min.lerp(b.max, 0.5), Vec2::new(40.0, 5.0));
    let u = Bounds::around([Vec2::new(1.0, 2.0), Vec2::new(-1.0, 5.0)]).unwrap();
    assert_eq!((u.min, u.max), (Vec2::new(-1.0, 2.0), Vec2::new(1.0, 5.0)));
    assert!(Bounds::around([]).is_none());
}
