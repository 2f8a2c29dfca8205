//! One scenario driven by two planners and drawn for comparison: both pictures share one crop
//! (equal viewBox), the collision is marked where it happened, the filmstrip's frames share a
//! crop per step and outline the divergence, and the motion chart has one line per planner.

use deltaplan_eval::episode::{divergence_step, filmstrip_svg, motion_svg, Row};
use deltaplan_eval::{
    render_episode, trace_episode, Comparison, Driver, EpisodeTrace, PlannerError, RenderedEpisode,
};
use deltaplan_sim::{Difficulty, EndReason, Family, ScenarioSpec, SimConfig, Split};

/// A planner that ignores what it sees: straight ahead at 14 m/s. Behind a braking leader it
/// collides; the expert brakes and does not.
fn blind(sim: SimConfig) -> impl FnMut(&[f32], &mut [f32]) -> Result<(), PlannerError> {
    move |_obs: &[f32], plans: &mut [f32]| {
        for (j, wp) in plans.chunks_exact_mut(2).enumerate() {
            wp[0] = 14.0 * (j + 1) as f32 * sim.controller.waypoint_dt;
            wp[1] = 0.0;
        }
        Ok(())
    }
}

struct Drawn {
    traces: Vec<EpisodeTrace>,
    comparison: Comparison,
    rendered: Vec<RenderedEpisode>,
}

/// The first hard-brake scenario of the eval suite where the blind planner collides, drawn for
/// the expert and the blind planner.
fn drawn() -> Drawn {
    let sim = SimConfig::default();
    let specs = Split::Eval.suite(&[Family::HardBrake], 20, Difficulty::default());
    for spec in specs {
        let mut planner = blind(sim);
        let blind_trace = trace_episode(sim, spec, &mut Driver::Planner(&mut planner)).unwrap();
        if blind_trace.stats.end != EndReason::CollisionVehicle {
            continue;
        }
        let expert_trace = trace_episode(sim, spec, &mut Driver::Expert).unwrap();
        let traces = vec![expert_trace, blind_trace];
        let comparison = Comparison::new(&traces.iter().collect::<Vec<_>>());
        let rendered = vec![
            render_episode(sim, spec, &mut Driver::Expert, "expert", &comparison).unwrap(),
            render_episode(
                sim,
                spec,
                &mut Driver::Planner(&mut planner),
                "blind",
                &comparison,
            )
            .unwrap(),
        ];
        return Drawn {
            traces,
            comparison,
            rendered,
        };
    }
    panic!(
        "no scenario where a planner that never brakes collides: {:?}",
        ScenarioSpec::default()
    );
}

fn parse(svg: &str) -> roxmltree::Document<'_> {
    roxmltree::Document::parse(svg).expect("well-formed SVG")
}

#[test]
fn both_pictures_share_one_crop_and_the_collision_is_marked_where_it_happened() {
    let d = drawn();
    // The second drive is the traced episode again (evaluation is deterministic).
    for (t, r) in d.traces.iter().zip(&d.rendered) {
        assert_eq!(t.stats, r.stats);
    }
    let expert = parse(&d.rendered[0].picture);
    let blind = parse(&d.rendered[1].picture);
    let view_box =
        |doc: &roxmltree::Document| doc.root_element().attribute("viewBox").unwrap().to_string();
    let size = |doc: &roxmltree::Document| {
        let r = doc.root_element();
        (
            r.attribute("width").unwrap().to_string(),
            r.attribute("height").unwrap().to_string(),
        )
    };
    assert_eq!(view_box(&expert), view_box(&blind), "same crop");
    assert_eq!(size(&expert), size(&blind), "same scale");
    // The crop holds both driven paths.
    let crop = d.comparison.crop;
    for t in &d.traces {
        for m in &t.motion {
            assert!(crop.min.x < m.position.x && m.position.x < crop.max.x);
            assert!(crop.min.y < m.position.y && m.position.y < crop.max.y);
        }
    }
    // The collision is marked, at the front of the blind planner's last position; the expert
    // has no marker.
    let incident = |doc: &roxmltree::Document| {
        doc.descendants()
            .filter(|n| n.attribute("class") == Some("incident"))
            .map(|n| {
                let at = |k| n.attribute(k).unwrap().parse::<f32>().unwrap();
                (
                    n.attribute("data-end").unwrap().to_string(),
                    at("data-x"),
                    at("data-y"),
                )
            })
            .collect::<Vec<_>>()
    };
    assert!(incident(&expert).is_empty());
    let marks = incident(&blind);
    assert_eq!(marks.len(), 1);
    let (end, x, y) = &marks[0];
    assert_eq!(end, "CollisionVehicle");
    let last = d.traces[1].motion.last().unwrap().position;
    let dist = ((x - last.x).powi(2) + (y - last.y).powi(2)).sqrt();
    // The contact point lies on the ego box: within half its length (and a bit) of its centre.
    assert!(
        dist > 0.5 && dist < 3.5,
        "contact {dist} m from the ego centre"
    );
    // A legend names what the colours mean.
    let legend = blind
        .descendants()
        .find(|n| n.attribute("class") == Some("legend"))
        .expect("a legend");
    let labels: Vec<&str> = legend
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text())
        .collect();
    assert!(
        labels.contains(&"ego") && labels.contains(&"collision / off-road"),
        "{labels:?}"
    );
}

#[test]
fn the_filmstrip_shows_both_planners_at_each_step_with_one_crop_per_step() {
    let d = drawn();
    let div = d.comparison.divergence.expect("the planners diverge");
    let (a, b) = (&d.traces[0].motion, &d.traces[1].motion);
    assert_eq!(divergence_step(a, b, 1.0), Some(div));
    assert!((a[div].position - b[div].position).norm() > 1.0);
    assert!((a[div - 1].position - b[div - 1].position).norm() <= 1.0);
    assert_eq!(
        d.comparison.frame_steps[1], div,
        "the second frame is the divergence"
    );
    let rows = [
        Row {
            name: "expert",
            colour: "#1f77b4",
            data: &d.rendered[0],
        },
        Row {
            name: "blind",
            colour: "#ff7f0e",
            data: &d.rendered[1],
        },
    ];
    let svg = filmstrip_svg("t", &rows, &d.comparison, 0.1);
    let doc = parse(&svg);
    let frames: Vec<roxmltree::Node> = doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("frame"))
        .collect();
    let n = d.comparison.frame_steps.len();
    assert_eq!(frames.len(), 2 * n);
    for k in 0..n {
        let (top, bottom) = (frames[k], frames[n + k]);
        assert_eq!(top.attribute("viewBox"), bottom.attribute("viewBox"));
        assert_eq!(top.attribute("data-step"), bottom.attribute("data-step"));
        assert_eq!(
            top.attribute("data-step").unwrap(),
            d.comparison.frame_steps[k].to_string()
        );
        assert_eq!(
            top.attribute("viewBox").unwrap(),
            d.comparison.frame_crops[k].view_box()
        );
    }
    // One size for every frame: one scale.
    let sizes: Vec<(f32, f32)> = d
        .comparison
        .frame_crops
        .iter()
        .map(|b| (b.width(), b.height()))
        .collect();
    assert!(sizes
        .iter()
        .all(|s| (s.0 - sizes[0].0).abs() < 1e-3 && (s.1 - sizes[0].1).abs() < 1e-3));
    let outlined = doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("divergence"))
        .count();
    assert_eq!(outlined, 2, "the divergence frame of each row");
    // The blind planner's last frame shows its collision.
    assert!(d.rendered[1]
        .frames
        .last()
        .unwrap()
        .contains("class=\"incident\""));
}

#[test]
fn the_motion_chart_has_one_line_per_planner_in_each_panel_and_marks_the_divergence() {
    let d = drawn();
    let rows = [
        Row {
            name: "expert",
            colour: "#1f77b4",
            data: &d.traces[0],
        },
        Row {
            name: "blind",
            colour: "#ff7f0e",
            data: &d.traces[1],
        },
    ];
    let t = d.comparison.divergence.unwrap() as f32 * 0.1;
    let svg = motion_svg("t", &rows, Some(t));
    let doc = parse(&svg);
    let panels: Vec<roxmltree::Node> = doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("panel"))
        .collect();
    assert_eq!(panels.len(), 2, "speed and acceleration");
    for panel in panels {
        let names: Vec<&str> = panel
            .descendants()
            .filter(|n| n.attribute("class") == Some("line"))
            .map(|n| n.attribute("data-name").unwrap())
            .collect();
        assert_eq!(names, ["expert", "blind"]);
        let markers: Vec<f32> = panel
            .descendants()
            .filter(|n| n.attribute("class") == Some("marker"))
            .map(|n| n.attribute("data-value").unwrap().parse().unwrap())
            .collect();
        assert_eq!(markers.len(), 1);
        assert!((markers[0] - t).abs() < 1e-4);
        // Each line has one point per step of its episode.
        for (line, trace) in panel
            .descendants()
            .filter(|n| n.attribute("class") == Some("line"))
            .zip(&d.traces)
        {
            let points = line.attribute("points").unwrap().split_whitespace().count();
            assert_eq!(points, trace.motion.len());
        }
    }
}
