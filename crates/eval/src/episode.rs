//! One scenario driven by several policies, for pictures that compare them.
//!
//! Two passes, because what the pictures share depends on every policy's episode: first each
//! policy's episode is traced ([`trace_episode`]: the ego's position, speed and acceleration at
//! every step); [`Comparison::new`] derives from the traces the crop every picture shares (so
//! they have one scale), the step where the policies first drive more than
//! [`DIVERGENCE_METRES`] apart, and the filmstrip's frames around it; then each policy drives
//! again ([`render_episode`]; evaluation is deterministic, so it is the same episode) and is
//! drawn at that crop, with the frames captured on the way.

use std::fmt::Write;

use deltaplan_sim::geom::Vec2;
use deltaplan_sim::metrics::nuplan_comfort;
use deltaplan_sim::render::{
    incident_marker, legend, render_svg, scene, Bounds, Crop, Trail, TRAIL_MARGIN,
};
use deltaplan_sim::{EndReason, EpisodeStats, ScenarioSpec, SimConfig, World, OBS_DIM};

use crate::drive::Driver;
use crate::plot::{stack, Line, LineChart, Marker, Reference};
use crate::Result;

/// Two policies have diverged once their ego positions at the same step are this far apart.
pub const DIVERGENCE_METRES: f32 = 1.0;
/// Frames per policy in a filmstrip.
pub const FRAMES: usize = 6;
/// Steps between frames (1 s at the default 10 Hz), fewer for short episodes.
pub const FRAME_SPACING: usize = 10;
/// Metres around the egos' positions in a frame.
const FRAME_MARGIN: f32 = 12.0;
/// The narrowest frame, metres.
const FRAME_MIN_WIDTH: f32 = 48.0;
/// Width over height of a frame.
const FRAME_ASPECT: f32 = 4.0 / 3.0;

/// The ego's motion at one step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MotionSample {
    /// Seconds since the episode began.
    pub time: f32,
    /// Centre of the ego box, metres.
    pub position: Vec2,
    /// m/s.
    pub speed: f32,
    /// Longitudinal acceleration, m/s^2.
    pub accel: f32,
}

/// One driven episode: its record and the ego's motion after the reset and after every step.
#[derive(Clone, Debug, PartialEq)]
pub struct EpisodeTrace {
    pub stats: EpisodeStats,
    pub motion: Vec<MotionSample>,
}

/// Drives `spec` to its end, calling `watch` with the world after the reset and after every
/// step (the last call sees the finished episode, `w.stats.end != Running`).
pub fn drive_episode(
    sim: SimConfig,
    spec: ScenarioSpec,
    driver: &mut Driver,
    watch: &mut dyn FnMut(&World),
) -> Result<EpisodeStats> {
    let mut w = World::new(sim);
    w.reset(spec);
    watch(&w);
    let raster = driver.bev_observation();
    if let Some(r) = raster {
        r.validate()?;
    }
    let mut obs = vec![0.0; OBS_DIM + raster.map_or(0, |r| r.len())];
    let mut plan = vec![0.0; sim.action_dim()];
    loop {
        match driver {
            Driver::Expert => deltaplan_sim::expert_plan(&w, &mut plan),
            Driver::Planner(p) => {
                deltaplan_sim::observe_with(&w, raster.as_ref(), &mut obs);
                p.plan(&obs, &mut plan)?;
            }
        }
        let r = w.step(&plan);
        watch(&w);
        if r.end != EndReason::Running {
            return Ok(w.stats);
        }
    }
}

/// Drives `spec` and records the ego's motion at every step.
pub fn trace_episode(
    sim: SimConfig,
    spec: ScenarioSpec,
    driver: &mut Driver,
) -> Result<EpisodeTrace> {
    let mut motion = Vec::new();
    let stats = drive_episode(sim, spec, driver, &mut |w| {
        motion.push(MotionSample {
            time: w.time(),
            position: w.ego.center(&w.cfg.vehicle),
            speed: w.ego.v,
            accel: w.ego.accel,
        })
    })?;
    Ok(EpisodeTrace { stats, motion })
}

/// The first step at which the positions of `a` and `b` are more than `metres` apart, compared
/// while both episodes run; `None` if they never are.
pub fn divergence_step(a: &[MotionSample], b: &[MotionSample], metres: f32) -> Option<usize> {
    a.iter()
        .zip(b)
        .position(|(x, y)| (x.position - y.position).norm() > metres)
}

/// The steps of a filmstrip: [`FRAMES`] steps one gap apart, the second at `divergence`, the
/// last at or after `until` (the end of the shorter episode, where it failed); the gap is at
/// least [`FRAME_SPACING`] (less for episodes too short for it). All lie within `0..=last`
/// (shifted left near the end).
pub fn frame_steps(divergence: usize, until: usize, last: usize) -> Vec<usize> {
    let gaps = FRAMES - 1;
    let spacing = FRAME_SPACING.min(last / gaps).max(1);
    let gap = spacing
        .max(until.saturating_sub(divergence).div_ceil(gaps - 1))
        .min(last / gaps)
        .max(1);
    let start = divergence
        .saturating_sub(gap)
        .min(last.saturating_sub(gap * gaps));
    (0..FRAMES).map(|k| (start + k * gap).min(last)).collect()
}

/// What the pictures of one scenario share, derived from every policy's trace.
#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    /// The crop of every full picture: every driven path plus [`TRAIL_MARGIN`].
    pub crop: Bounds,
    /// The first step where two policies drive more than [`DIVERGENCE_METRES`] apart (the
    /// first pair that does, in the given order).
    pub divergence: Option<usize>,
    /// The filmstrip's steps, from just before the divergence to the end of the shortest
    /// episode (or, when the policies never diverge, the last seconds of the shortest one).
    pub frame_steps: Vec<usize>,
    /// The crop of each frame step, shared by every policy's frame at that step: centred on
    /// the egos, all of one size (so every frame has one scale).
    pub frame_crops: Vec<Bounds>,
}

impl Comparison {
    /// `traces` are the same scenario driven by each policy (at least one).
    pub fn new(traces: &[&EpisodeTrace]) -> Comparison {
        let positions = || {
            traces
                .iter()
                .flat_map(|t| t.motion.iter().map(|m| m.position))
        };
        let origin = Bounds {
            min: Vec2::ZERO,
            max: Vec2::ZERO,
        };
        let crop = Bounds::around(positions())
            .unwrap_or(origin)
            .grown(TRAIL_MARGIN);
        let divergence = traces.iter().enumerate().find_map(|(i, a)| {
            traces[i + 1..]
                .iter()
                .filter_map(|b| divergence_step(&a.motion, &b.motion, DIVERGENCE_METRES))
                .min()
        });
        let last_of = |t: &&EpisodeTrace| t.motion.len().saturating_sub(1);
        let last = traces.iter().map(last_of).max().unwrap_or(0);
        let shortest = traces.iter().map(last_of).min().unwrap_or(0);
        let from = divergence.unwrap_or(shortest.saturating_sub(4 * FRAME_SPACING));
        let frame_steps = frame_steps(from, shortest, last);
        // Each step's egos, then one size for all frames: the widest spread plus a margin.
        let egos: Vec<Bounds> = frame_steps
            .iter()
            .map(|&k| {
                Bounds::around(
                    traces
                        .iter()
                        .filter_map(|t| t.motion.get(k.min(last_of(t))).map(|m| m.position)),
                )
                .unwrap_or(origin)
            })
            .collect();
        let size = egos
            .iter()
            .map(|b| b.grown(FRAME_MARGIN).with_aspect(FRAME_ASPECT))
            .fold(
                Bounds {
                    min: Vec2::ZERO,
                    max: Vec2::new(FRAME_MIN_WIDTH, FRAME_MIN_WIDTH / FRAME_ASPECT),
                },
                |a, b| Bounds {
                    min: Vec2::ZERO,
                    max: Vec2::new(a.width().max(b.width()), a.height().max(b.height())),
                },
            );
        let frame_crops = egos
            .iter()
            .map(|b| {
                let c = b.min.lerp(b.max, 0.5);
                let half = Vec2::new(0.5 * size.width(), 0.5 * size.height());
                Bounds {
                    min: c - half,
                    max: c + half,
                }
            })
            .collect();
        Comparison {
            crop,
            divergence,
            frame_steps,
            frame_crops,
        }
    }
}

/// One policy's episode drawn for a [`Comparison`].
#[derive(Clone, Debug, PartialEq)]
pub struct RenderedEpisode {
    pub stats: EpisodeStats,
    /// The last frame with the whole driven path, at the comparison's crop (an SVG document).
    pub picture: String,
    /// The scene at each of the comparison's frame steps (the final one for steps after the
    /// episode ended), SVG elements in world metres for [`filmstrip_svg`].
    pub frames: Vec<String>,
    /// The episode's last step.
    pub last_step: usize,
}

/// Drives `spec` and draws it for `comparison` (see the module docs).
pub fn render_episode(
    sim: SimConfig,
    spec: ScenarioSpec,
    driver: &mut Driver,
    title: &str,
    comparison: &Comparison,
) -> Result<RenderedEpisode> {
    let mut trail = Trail::default();
    let mut frames = vec![String::new(); comparison.frame_steps.len()];
    let mut picture = String::new();
    let mut last_step = 0;
    let stats = drive_episode(sim, spec, driver, &mut |w| {
        trail.record(w);
        let step = w.step_count as usize;
        let finished = w.stats.end != EndReason::Running;
        let frames = frames.iter_mut().zip(&comparison.frame_steps);
        for ((frame, &k), crop) in frames.zip(&comparison.frame_crops) {
            if k == step || (finished && k > step) {
                scene(w, &trail, frame);
                incident_marker(w, 0.03 * crop.width(), frame);
            }
        }
        if finished {
            picture = render_svg(w, &trail, title, Crop::Fixed(comparison.crop));
            last_step = step;
        }
    })?;
    Ok(RenderedEpisode {
        stats,
        picture,
        frames,
        last_step,
    })
}

/// One row of a filmstrip or a line of the motion chart: a policy's name and colour.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Row<'a, T> {
    pub name: &'a str,
    pub colour: &'static str,
    pub data: &'a T,
}

/// A filmstrip: one row of frames per policy, every frame at the comparison's frame crop, the
/// divergence frame outlined, a legend under it. `dt` is the step length in seconds.
pub fn filmstrip_svg(
    title: &str,
    rows: &[Row<RenderedEpisode>],
    comparison: &Comparison,
    dt: f32,
) -> String {
    const LABEL_W: f32 = 60.0;
    const CELL_W: f32 = 180.0;
    const GAP: f32 = 6.0;
    const TITLE_H: f32 = 30.0;
    const CAPTION_H: f32 = 16.0;
    const LEGEND_H: f32 = 32.0;
    let cell_h = CELL_W / FRAME_ASPECT;
    let row_h = CAPTION_H + cell_h + GAP;
    let n = comparison.frame_steps.len() as f32;
    let width = LABEL_W + n * (CELL_W + GAP);
    let height = TITLE_H + row_h * rows.len() as f32 + LEGEND_H;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {width} {height}\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">"
    );
    let _ = writeln!(
        s,
        "<rect width=\"{width}\" height=\"{height}\" fill=\"white\"/>"
    );
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"20\" text-anchor=\"middle\" font-size=\"15\">{}</text>",
        width / 2.0,
        esc(title)
    );
    for (r, row) in rows.iter().enumerate() {
        let y = TITLE_H + r as f32 * row_h;
        let _ = writeln!(
            s,
            "<text x=\"4\" y=\"{:.1}\" fill=\"{}\" font-weight=\"bold\">{}</text>",
            y + CAPTION_H + 0.5 * cell_h,
            row.colour,
            esc(row.name)
        );
        let cells = row.data.frames.iter().zip(&comparison.frame_steps);
        for (k, ((frame, &step), b)) in cells.zip(&comparison.frame_crops).enumerate() {
            let x = LABEL_W + k as f32 * (CELL_W + GAP);
            let ended = if step > row.data.last_step {
                format!(" (ended {:.1} s)", row.data.last_step as f32 * dt)
            } else {
                String::new()
            };
            let _ = writeln!(
                s,
                "<text x=\"{x:.1}\" y=\"{:.1}\" font-size=\"11\">t = {:.1} s{ended}</text>",
                y + CAPTION_H - 4.0,
                step as f32 * dt
            );
            let _ = writeln!(
                s,
                "<svg class=\"frame\" data-step=\"{step}\" x=\"{x:.1}\" y=\"{:.1}\" width=\"{CELL_W}\" height=\"{cell_h:.1}\" viewBox=\"{}\">",
                y + CAPTION_H,
                b.view_box()
            );
            let _ = writeln!(
                s,
                "<rect x=\"{:.2}\" y=\"{:.2}\" width=\"{:.2}\" height=\"{:.2}\" fill=\"#6a8f5a\"/>",
                b.min.x,
                -b.max.y,
                b.width(),
                b.height()
            );
            s.push_str(frame);
            s.push_str("</svg>\n");
            if Some(step) == comparison.divergence {
                let _ = writeln!(
                    s,
                    "<rect class=\"divergence\" x=\"{x:.1}\" y=\"{:.1}\" width=\"{CELL_W}\" height=\"{cell_h:.1}\" fill=\"none\" stroke=\"#d62728\" stroke-width=\"3\"/>",
                    y + CAPTION_H
                );
            }
        }
    }
    let legend_y = TITLE_H + row_h * rows.len() as f32;
    legend(&mut s, Vec2::new(0.0, legend_y), width, LEGEND_H);
    if comparison
        .divergence
        .is_some_and(|d| comparison.frame_steps.contains(&d))
    {
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" font-size=\"11\" fill=\"#d62728\">red frame: first step more than {DIVERGENCE_METRES} m apart</text>",
            width - 6.0,
            TITLE_H - 4.0
        );
    }
    s.push_str("</svg>\n");
    s
}

/// Speed and acceleration over time of every policy in one figure (two panels), the
/// divergence marked, nuPlan's longitudinal acceleration bounds drawn.
pub fn motion_svg(title: &str, rows: &[Row<EpisodeTrace>], divergence_time: Option<f32>) -> String {
    let series = |value: fn(&MotionSample) -> f32| -> Vec<Line> {
        rows.iter()
            .map(|r| Line {
                name: Some(r.name.to_string()),
                colour: r.colour,
                faint: false,
                points: r
                    .data
                    .motion
                    .iter()
                    .map(|m| (f64::from(m.time), f64::from(value(m))))
                    .collect(),
            })
            .collect()
    };
    let markers: Vec<Marker> = divergence_time
        .iter()
        .map(|&t| Marker {
            label: format!("more than {DIVERGENCE_METRES} m apart"),
            x: f64::from(t),
        })
        .collect();
    let bound = |label: &str, y: f32| Reference {
        label: label.into(),
        y: f64::from(y),
        colour: "#888",
        dashed: true,
    };
    let panel = |title: String, y_label: &str, lines, references| LineChart {
        title,
        x_label: "time (s)".into(),
        y_label: y_label.into(),
        lines,
        references,
        markers: markers.clone(),
        height: 240.0,
        ..LineChart::default()
    };
    stack(&[
        panel(
            format!("{title}: speed"),
            "speed (m/s)",
            series(|m| m.speed),
            Vec::new(),
        ),
        panel(
            format!("{title}: longitudinal acceleration"),
            "acceleration (m/s^2)",
            series(|m| m.accel),
            vec![
                bound(
                    "nuPlan comfort: max acceleration",
                    nuplan_comfort::MAX_LON_ACCEL,
                ),
                bound(
                    "nuPlan comfort: max deceleration",
                    nuplan_comfort::MIN_LON_ACCEL,
                ),
            ],
        ),
    ])
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(x: f32) -> MotionSample {
        MotionSample {
            time: 0.0,
            position: Vec2::new(x, 0.0),
            speed: 0.0,
            accel: 0.0,
        }
    }

    #[test]
    fn divergence_is_the_first_step_more_than_a_metre_apart() {
        let a: Vec<MotionSample> = (0..10).map(|k| at(k as f32)).collect();
        let mut b = a.clone();
        b[4] = at(4.9); // 0.9 m: not yet
        b[6] = at(7.5); // 1.5 m
        b[7] = at(7.0);
        assert_eq!(divergence_step(&a, &b, 1.0), Some(6));
        // Only while both run: a shorter episode never diverges after its end.
        assert_eq!(divergence_step(&a, &b[..6], 1.0), None);
    }

    #[test]
    fn frames_surround_the_centre_and_stay_in_the_episode() {
        // Diverging at 50, the shorter episode ends at 60: at least 1 s between frames.
        assert_eq!(frame_steps(50, 60, 200), vec![40, 50, 60, 70, 80, 90]);
        // Ending 90 steps later: the frames reach it, evenly, the second at the divergence.
        assert_eq!(frame_steps(50, 140, 200), vec![27, 50, 73, 96, 119, 142]);
        // Near the start: from 0.
        assert_eq!(frame_steps(5, 20, 200), vec![0, 10, 20, 30, 40, 50]);
        // Near the end: shifted so the last frame is the last step.
        assert_eq!(
            frame_steps(195, 200, 200),
            vec![150, 160, 170, 180, 190, 200]
        );
        // A short episode: closer frames, still six, within it.
        assert_eq!(frame_steps(10, 20, 20), vec![0, 4, 8, 12, 16, 20]);
        assert_eq!(frame_steps(0, 3, 3), vec![0, 1, 2, 3, 3, 3]);
    }
}
