//! Demonstrations by SUMO's own driver model: SUMO drives the ego along its route
//! ([`SumoWorld::reset_driven_by_sumo`], settings in [`crate::world::SUMO_DRIVER`]) while every
//! state is recorded with the observation deltaplan's planners read ([`SumoWorld::observe`]) and,
//! as its label, the waypoints the ego then actually followed.
//!
//! Labels in hindsight: the label of the state at time t is where the ego's box centre was at
//! t + 0.2, 0.4, ..., 2.0 s (`sim.controller.waypoint_dt` apart, `sim.horizon` of them), in the
//! ego frame at t (origin at the box centre, x along the heading, y to the left, metres): the
//! frame and reference point of every plan (`deltaplan_sim::vehicle::track_waypoints` tracks the
//! box centre; the built-in expert plans it). SUMO reports the front bumper; the centre is half
//! a length behind it along the heading. A state whose 2 s are not all recorded has no label
//! and is dropped: the last 2 s of every episode (after a collision or the end of the route
//! nothing more was driven; at the end of a recording nothing more was recorded).
//!
//! An episode's states are kept until it ends, then labelled and handed on whole, so an episode
//! SUMO loses mid-way (a crash, a hang, the ego removed) is discarded entirely, with a warning,
//! and the world goes on with its next episode. Determinism: each world is its own SUMO
//! process, seeded per episode, and the worlds' episodes are returned in world order, so the
//! same seed gives the same episodes bit for bit for any thread count.

use crate::env::{start_with_retries, train_episode_seed, MAX_START_ATTEMPTS};
use crate::locate::SumoBinaries;
use crate::world::{NetContext, SumoConfig, SumoWorld, WorldError};
use crate::StartFailure;
use deltaplan_sim::config::SimConfig;
use deltaplan_sim::events::EndReason;
use deltaplan_sim::geom::Vec2;
use deltaplan_sim::metrics::EpisodeStats;
use deltaplan_sim::obs::OBS_DIM;
use rayon::prelude::*;
use std::sync::Arc;

/// SUMO's driver model on a set of networks: where it drives.
pub struct Demonstrator<'a> {
    pub sim: SimConfig,
    pub sumo: SumoConfig,
    /// World `i` drives on `nets[i % len]`.
    pub nets: &'a [Arc<NetContext>],
    pub bins: &'a SumoBinaries,
}

/// How much a recording drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DemoRun {
    /// Seeds the episodes: world `i`'s episode `k` is the training-split seed refinement's
    /// world `i` draws for its episode `k` with this seed.
    pub seed: u64,
    pub worlds: usize,
    /// Simulation steps each world drives (episodes back to back).
    pub steps: usize,
}

/// Why demonstrations could not be recorded.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(
        "labels in hindsight need waypoints on whole simulation steps: sim.controller.waypoint_dt \
         = {waypoint_dt} s is not a multiple of sim.dt = {dt} s"
    )]
    WaypointSpacing { waypoint_dt: f32, dt: f32 },
    #[error(transparent)]
    Start(#[from] StartFailure),
    #[error(
        "SUMO world {world} lost episode seed {seed} {MAX_START_ATTEMPTS} times in a row: {error}"
    )]
    Lost {
        world: usize,
        seed: u64,
        error: WorldError,
    },
}

/// One episode SUMO's driver model drove, with its labelled states.
#[derive(Clone, Debug, PartialEq)]
pub struct DrivenEpisode {
    /// The world that drove it.
    pub world: usize,
    pub seed: u64,
    /// The world's record of the episode (`end` is `Running` for one the recording cut short).
    pub stats: EpisodeStats,
    /// `[n, OBS_DIM]`: the observations of the states 0..n (0 = the reset state), those whose
    /// labels are complete.
    pub obs: Vec<f32>,
    /// `[n, 2H]`: their labels (see the module docs).
    pub labels: Vec<f32>,
}

impl DrivenEpisode {
    /// Labelled states.
    pub fn samples(&self) -> usize {
        self.obs.len() / OBS_DIM
    }
}

/// Where the box centre was and which way the ego faced, at one state.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CentrePose {
    pub center: Vec2,
    pub yaw: f32,
}

/// The label of state `t` of `poses` (one per simulation step): the box centre
/// `stride, 2 stride, ..., H stride` steps later (H = `out.len() / 2`) in the ego frame of
/// state `t`, flattened `x0, y0, x1, y1, ...`. `None` (and `out` untouched) when the poses end
/// too soon.
pub fn hindsight_label(
    poses: &[CentrePose],
    t: usize,
    stride: usize,
    out: &mut [f32],
) -> Option<()> {
    let horizon = out.len() / 2;
    poses.get(t + stride * horizon)?;
    let now = poses[t];
    let heading = Vec2::from_angle(now.yaw);
    for (j, wp) in out.chunks_exact_mut(2).enumerate() {
        let p = poses[t + stride * (j + 1)]
            .center
            .to_frame(now.center, heading);
        wp[0] = p.x;
        wp[1] = p.y;
    }
    Some(())
}

impl Demonstrator<'_> {
    /// Drives `run.worlds` worlds for `run.steps` steps each, in parallel (one SUMO process
    /// per world, alive while its world drives), calling `on_step` after every step of any
    /// world. Returns the episodes in world order, each world's in the order driven.
    pub fn record(
        &self,
        run: &DemoRun,
        on_step: &(dyn Fn() + Sync),
    ) -> Result<Vec<DrivenEpisode>, DemoError> {
        let stride = self.stride()?;
        let per_world = (0..run.worlds)
            .into_par_iter()
            .with_max_len(1)
            .map(|i| self.record_world(run, i, stride, on_step))
            .collect::<Result<Vec<_>, DemoError>>()?;
        Ok(per_world.into_iter().flatten().collect())
    }

    /// Steps between two waypoints of a label.
    fn stride(&self) -> Result<usize, DemoError> {
        self.sim
            .steps_per_waypoint()
            .ok_or(DemoError::WaypointSpacing {
                waypoint_dt: self.sim.controller.waypoint_dt,
                dt: self.sim.dt,
            })
    }

    fn world(&self, i: usize) -> SumoWorld {
        SumoWorld::new(
            self.sim,
            self.sumo.clone(),
            Arc::clone(&self.nets[i % self.nets.len()]),
            self.bins.clone(),
        )
    }

    /// World `i`'s episodes, back to back, until it has driven `steps` steps.
    fn record_world(
        &self,
        run: &DemoRun,
        i: usize,
        stride: usize,
        on_step: &(dyn Fn() + Sync),
    ) -> Result<Vec<DrivenEpisode>, DemoError> {
        let mut world = self.world(i);
        let mut recorder = Recorder::new(stride, self.sim.action_dim());
        let mut episodes = Vec::new();
        let (mut driven, mut episode, mut restarts) = (0, 0u64, 0u32);
        while driven < run.steps {
            let seed = train_episode_seed(run.seed, i, episode);
            episode += 1;
            start_with_retries(
                &mut world,
                i,
                seed,
                SumoWorld::reset_driven_by_sumo,
                &mut restarts,
            )?;
            recorder.begin(&world);
            let budget = run.steps - driven;
            match recorder.drive(&mut world, budget, on_step) {
                Ok(steps) => {
                    driven += steps;
                    episodes.push(recorder.finish(i, &world));
                }
                Err((steps, e)) => {
                    driven += steps;
                    tracing::warn!(
                        "SUMO world {i} (process {}, episode seed {seed}) failed: {e}; restarting SUMO, episode discarded",
                        world.sumo_pid().map_or("gone".to_string(), |p| p.to_string())
                    );
                    world.kill_sumo();
                }
            }
        }
        Ok(episodes)
    }

    /// SUMO's driver model on a fixed list of episode seeds, one world each (episode `k` on
    /// `nets[k % len]`, as an evaluation's worlds): each episode's record. An episode SUMO
    /// loses is driven again from its start (a warning each time), up to
    /// [`MAX_START_ATTEMPTS`] times.
    pub fn drive_fixed(&self, seeds: &[u64]) -> Result<Vec<EpisodeStats>, DemoError> {
        seeds
            .par_iter()
            .with_max_len(1)
            .enumerate()
            .map(|(k, &seed)| {
                let mut world = self.world(k);
                let mut restarts = 0;
                let mut attempt = 1;
                loop {
                    start_with_retries(
                        &mut world,
                        k,
                        seed,
                        SumoWorld::reset_driven_by_sumo,
                        &mut restarts,
                    )?;
                    match drive_to_the_end(&mut world, usize::MAX) {
                        Ok(_) => return Ok(world.stats),
                        Err(error) => {
                            tracing::warn!(
                                "SUMO world {k} (episode seed {seed}) failed: {error}; restarting SUMO, episode driven again (attempt {attempt} of {MAX_START_ATTEMPTS})"
                            );
                            world.kill_sumo();
                            if attempt == MAX_START_ATTEMPTS {
                                return Err(DemoError::Lost {
                                    world: k,
                                    seed,
                                    error,
                                });
                            }
                            attempt += 1;
                        }
                    }
                }
            })
            .collect()
    }
}

/// Steps a SUMO-driven episode until it ends or `budget` steps are driven; the steps driven.
fn drive_to_the_end(world: &mut SumoWorld, budget: usize) -> Result<usize, WorldError> {
    let mut steps = 0;
    while steps < budget {
        steps += 1;
        if world.step_driven_by_sumo()?.end != EndReason::Running {
            break;
        }
    }
    Ok(steps)
}

/// One world's episode in the making: every state's observation and box-centre pose.
struct Recorder {
    stride: usize,
    action_dim: usize,
    obs: Vec<f32>,
    poses: Vec<CentrePose>,
}

impl Recorder {
    fn new(stride: usize, action_dim: usize) -> Self {
        Recorder {
            stride,
            action_dim,
            obs: Vec::new(),
            poses: Vec::new(),
        }
    }

    /// Starts an episode at `world`'s reset state.
    fn begin(&mut self, world: &SumoWorld) {
        self.obs.clear();
        self.poses.clear();
        self.push(world);
    }

    fn push(&mut self, world: &SumoWorld) {
        let at = self.obs.len();
        self.obs.resize(at + OBS_DIM, 0.0);
        world.observe(&mut self.obs[at..]);
        self.poses.push(CentrePose {
            center: world.ego.center(&world.cfg.vehicle),
            yaw: world.ego.yaw,
        });
    }

    /// Lets SUMO drive until the episode ends or `budget` steps are driven, recording every
    /// state; the steps driven, or with the error the steps driven before it.
    fn drive(
        &mut self,
        world: &mut SumoWorld,
        budget: usize,
        on_step: &(dyn Fn() + Sync),
    ) -> Result<usize, (usize, WorldError)> {
        let mut steps = 0;
        while steps < budget {
            let result = world.step_driven_by_sumo().map_err(|e| (steps + 1, e));
            steps += 1;
            on_step();
            let end = result?.end;
            self.push(world);
            if end != EndReason::Running {
                break;
            }
        }
        Ok(steps)
    }

    /// The episode's labelled states (those whose labels are complete).
    fn finish(&mut self, world_index: usize, world: &SumoWorld) -> DrivenEpisode {
        let states = self.poses.len();
        let n = states.saturating_sub(self.stride * (self.action_dim / 2));
        let mut labels = vec![0.0; n * self.action_dim];
        for (t, label) in labels.chunks_exact_mut(self.action_dim).enumerate() {
            // Complete by construction: state t + stride * H exists for every t < n.
            let _ = hindsight_label(&self.poses, t, self.stride, label);
        }
        DrivenEpisode {
            world: world_index,
            seed: world.seed,
            stats: world.stats,
            obs: self.obs[..n * OBS_DIM].to_vec(),
            labels,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_label_is_the_later_centres_in_the_frame_of_now() {
        // The ego at (10, 5) facing north (yaw pi/2); later centres 1 m further north per
        // step and 0.5 m west per step: in its frame, x forward (north), y left (west).
        let poses: Vec<CentrePose> = (0..7)
            .map(|k| CentrePose {
                center: Vec2::new(10.0 - 0.5 * k as f32, 5.0 + k as f32),
                yaw: std::f32::consts::FRAC_PI_2,
            })
            .collect();
        let mut out = [0.0f32; 6];
        hindsight_label(&poses, 0, 2, &mut out).unwrap();
        let want = [2.0, 1.0, 4.0, 2.0, 6.0, 3.0];
        for (a, b) in out.iter().zip(want) {
            assert!((a - b).abs() < 1e-5, "{out:?}");
        }
        // From state 1 the last waypoint would be state 7: not recorded, no label.
        let mut untouched = [9.0f32; 6];
        assert!(hindsight_label(&poses, 1, 2, &mut untouched).is_none());
        assert_eq!(untouched, [9.0; 6]);
        // A turned frame: facing east at the origin, a centre 3 m ahead and 1 m to the right.
        let poses = [
            CentrePose {
                center: Vec2::ZERO,
                yaw: 0.0,
            },
            CentrePose {
                center: Vec2::new(3.0, -1.0),
                yaw: 0.3,
            },
        ];
        let mut one = [0.0f32; 2];
        hindsight_label(&poses, 0, 1, &mut one).unwrap();
        assert_eq!(one, [3.0, -1.0]);
    }
}
