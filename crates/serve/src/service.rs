//! `egodriver.EgodriverService` over a deltaplan planner: sessions, observations in, plans out.
//!
//! The planner itself is not here: it runs on the thread that called [`crate::serve`] (it need
//! not be `Send`), and a drive call hands it a [`PlanJob`] and awaits the answer. Jobs that
//! arrive together (several sessions) are planned as one batch.

use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use deltaplan_eval::Planner;
use deltaplan_sim::obs::OBS_DIM;
use deltaplan_sim::SimConfig;
use tokio::sync::oneshot;
use tonic::{Request, Response, Status};

use crate::answer::trajectory;
use crate::geometry::FieldError;
use crate::observation::{observe, Assumptions, RouteSource};
use crate::pb::common;
use crate::pb::egodriver::egodriver_service_server::EgodriverService;
use crate::pb::egodriver::{
    drive_response, DriveRequest, DriveResponse, DriveSessionCloseRequest, DriveSessionRequest,
    GroundTruthRequest, RolloutCameraImage, RolloutEgoTrajectory, RouteRequest,
};
use crate::session::Session;

/// The gRPC metadata key of carla-driver-interface's contract revision; revision 2 is
/// alpasim's own convention for camera mounts (deltaplan reads no camera, so either would do).
pub const CONTRACT_METADATA_KEY: &str = "carla-driver-interface-contract";
/// The contract revision this server declares.
pub const CONTRACT_REVISION: &str = "2";
/// alpasim_grpc's API version of the vendored contract (what alpasim's drivers report).
pub const API_VERSION: (u32, u32, u32) = (0, 55, 0);
/// Largest message accepted: camera frames arrive whole (carla-driver-interface's limit).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// One observation to plan, and where its plan goes.
pub struct PlanJob {
    pub observation: Vec<f32>,
    pub reply: oneshot::Sender<Result<Vec<f32>, String>>,
}

/// Plans every job `jobs` delivers until every sender is gone; jobs waiting together are one
/// batch (at most `max_batch`). A planner error answers every job of its batch.
pub fn plan_jobs(
    planner: &mut dyn Planner,
    jobs: &mpsc::Receiver<PlanJob>,
    horizon: usize,
    max_batch: usize,
) {
    let width = 2 * horizon;
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let observations: Vec<f32> = batch
            .iter()
            .flat_map(|j| j.observation.iter().copied())
            .collect();
        let mut plans = vec![0.0f32; batch.len() * width];
        match planner.plan(&observations, &mut plans) {
            Ok(()) => {
                for (job, plan) in batch.into_iter().zip(plans.chunks_exact(width)) {
                    let _ = job.reply.send(Ok(plan.to_vec()));
                }
            }
            Err(e) => {
                let message = e.to_string();
                for job in batch {
                    let _ = job.reply.send(Err(message.clone()));
                }
            }
        }
    }
}

/// The service: the sessions and the way to the planner.
pub struct Egodriver {
    sessions: Mutex<HashMap<String, Session>>,
    jobs: mpsc::Sender<PlanJob>,
    sim: SimConfig,
    assumptions: Assumptions,
    version_id: String,
}

impl Egodriver {
    pub fn new(
        jobs: mpsc::Sender<PlanJob>,
        sim: SimConfig,
        assumptions: Assumptions,
        version_id: String,
    ) -> Self {
        Egodriver {
            sessions: Mutex::new(HashMap::new()),
            jobs,
            sim,
            assumptions,
            version_id,
        }
    }

    fn sessions(&self) -> MutexGuard<'_, HashMap<String, Session>> {
        // A panic while holding the lock leaves no half-updated session (updates are checked
        // before they are applied), so the map stays usable.
        self.sessions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` on the session `uuid`, or answers NOT_FOUND.
    fn with_session<T>(
        &self,
        uuid: &str,
        f: impl FnOnce(&mut Session) -> Result<T, Status>,
    ) -> Result<T, Status> {
        let mut sessions = self.sessions();
        let session = sessions.get_mut(uuid).ok_or_else(|| {
            Status::not_found(format!(
                "unknown session {uuid:?}: call start_session first (or it was closed)"
            ))
        })?;
        f(session)
    }
}

fn invalid(e: FieldError) -> Status {
    Status::invalid_argument(e.to_string())
}

#[tonic::async_trait]
impl EgodriverService for Egodriver {
    async fn start_session(
        &self,
        request: Request<DriveSessionRequest>,
    ) -> Result<Response<common::SessionRequestStatus>, Status> {
        let r = request.into_inner();
        if r.session_uuid.is_empty() {
            return Err(Status::invalid_argument("session_uuid is empty"));
        }
        let mut sessions = self.sessions();
        if sessions.contains_key(&r.session_uuid) {
            return Err(Status::already_exists(format!(
                "session {:?} already exists",
                r.session_uuid
            )));
        }
        let scene = r.debug_info.map(|d| d.scene_id).unwrap_or_default();
        tracing::info!(
            "start_session {} (scene {scene:?}, seed {}); {} open",
            r.session_uuid,
            r.random_seed,
            sessions.len() + 1
        );
        sessions.insert(r.session_uuid, Session::default());
        Ok(Response::new(common::SessionRequestStatus {}))
    }

    async fn close_session(
        &self,
        request: Request<DriveSessionCloseRequest>,
    ) -> Result<Response<common::Empty>, Status> {
        let uuid = request.into_inner().session_uuid;
        match self.sessions().remove(&uuid) {
            Some(s) => tracing::info!(
                "close_session {uuid} after {} drive calls ({:.2} ms each on average)",
                s.drives,
                1e3 * s.drive_seconds / (s.drives.max(1) as f64)
            ),
            None => tracing::warn!("close_session for unknown session {uuid:?}"),
        }
        Ok(Response::new(common::Empty {}))
    }

    async fn submit_image_observation(
        &self,
        request: Request<RolloutCameraImage>,
    ) -> Result<Response<common::Empty>, Status> {
        // The planner reads no images: accepted for a known session, not kept.
        self.with_session(&request.into_inner().session_uuid, |_| Ok(()))?;
        Ok(Response::new(common::Empty {}))
    }

    async fn submit_egomotion_observation(
        &self,
        request: Request<RolloutEgoTrajectory>,
    ) -> Result<Response<common::Empty>, Status> {
        let r = request.into_inner();
        self.with_session(&r.session_uuid, |s| {
            s.add_egomotion(&r).map_err(invalid)?;
            Ok(())
        })?;
        Ok(Response::new(common::Empty {}))
    }

    async fn submit_route(
        &self,
        request: Request<RouteRequest>,
    ) -> Result<Response<common::Empty>, Status> {
        let r = request.into_inner();
        self.with_session(&r.session_uuid, |s| {
            s.set_route(r.route.as_ref()).map_err(invalid)
        })?;
        Ok(Response::new(common::Empty {}))
    }

    async fn submit_recording_ground_truth(
        &self,
        request: Request<GroundTruthRequest>,
    ) -> Result<Response<common::Empty>, Status> {
        // The recorded drive is not an input of deltaplan's planners: accepted, not kept.
        self.with_session(&request.into_inner().session_uuid, |_| Ok(()))?;
        Ok(Response::new(common::Empty {}))
    }

    async fn drive(
        &self,
        request: Request<DriveRequest>,
    ) -> Result<Response<DriveResponse>, Status> {
        let started = Instant::now();
        let r = request.into_inner();
        let mut observation = vec![0.0f32; OBS_DIM];
        let anchor = self.with_session(&r.session_uuid, |s| {
            s.drives += 1;
            let Some(latest) = s.latest().copied() else {
                return Ok(None);
            };
            let route = s.route_in_latest_rig();
            let source = observe(
                &latest.motion,
                &route,
                &self.sim,
                &self.assumptions,
                &mut observation,
            );
            if source == RouteSource::StraightAhead && !s.warned_no_route {
                s.warned_no_route = true;
                tracing::warn!(
                    "session {}: no usable route (submit_route with two or more distinct \
                     waypoints); planning along a straight route ahead",
                    r.session_uuid
                );
            }
            Ok(Some(latest.pose))
        })?;
        let Some(anchor) = anchor else {
            // Before the first egomotion there is no frame to plan in: an empty trajectory,
            // which runtimes read as "hold", as alpasim's own driver answers.
            tracing::debug!(
                "drive before any egomotion in {}: empty plan",
                r.session_uuid
            );
            return Ok(Response::new(DriveResponse::default()));
        };
        if observation.iter().any(|v| !v.is_finite()) {
            return Err(Status::invalid_argument(format!(
                "session {}: the observation built from the submitted ego motion and route \
                 is not finite (values too large?)",
                r.session_uuid
            )));
        }
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(PlanJob { observation, reply })
            .map_err(|_| Status::unavailable("the planner has stopped (server shutting down)"))?;
        let plan = answer
            .await
            .map_err(|_| Status::unavailable("the planner has stopped (server shutting down)"))?
            .map_err(|e| Status::internal(format!("the planner failed: {e}")))?;
        if plan.iter().any(|v| !v.is_finite()) {
            return Err(Status::internal(format!(
                "the planner's plan for session {} at {} us is not finite",
                r.session_uuid, r.time_now_us
            )));
        }
        let trajectory = trajectory(
            &plan,
            &anchor,
            r.time_now_us,
            self.sim.controller.waypoint_dt,
            self.sim.vehicle.rear_to_center,
        );
        // The session may have been closed meanwhile: then nothing to count.
        if let Some(s) = self.sessions().get_mut(&r.session_uuid) {
            s.drive_seconds += started.elapsed().as_secs_f64();
        }
        Ok(Response::new(DriveResponse {
            trajectory: Some(trajectory),
            debug_info: Some(drive_response::DebugInfo::default()),
            terminate_session: false,
        }))
    }

    async fn get_version(
        &self,
        _request: Request<common::Empty>,
    ) -> Result<Response<common::VersionId>, Status> {
        let (major, minor, patch) = API_VERSION;
        let mut response = Response::new(common::VersionId {
            version_id: self.version_id.clone(),
            git_hash: String::new(),
            grpc_api_version: Some(common::version_id::ApiVersion {
                major,
                minor,
                patch,
            }),
        });
        response.metadata_mut().insert(
            CONTRACT_METADATA_KEY,
            tonic::metadata::MetadataValue::from_static(CONTRACT_REVISION),
        );
        Ok(response)
    }
}
