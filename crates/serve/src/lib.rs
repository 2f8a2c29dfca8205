//! A deltaplan planner served over the egodriver gRPC contract of NVlabs' alpasim
//! (`egodriver.EgodriverService`), so runtimes that speak it (alpasim, autoware_carla_scenario's
//! CARLA runtime, carla-driver-interface's fake loop) drive with it in closed loop.
//!
//! The contract, as vendored by the PyPI package `carla-driver-interface` 2.3.1 (from
//! alpasim at 6870924, Apache-2.0), is committed as a descriptor set in `proto/`; its Rust code
//! is generated and committed (`pb`). A session goes: `get_version`, `start_session` (cameras),
//! then per step `submit_egomotion_observation` (rig poses in the `local` frame, dynamic
//! states in the rig frame), `submit_route` (waypoints in the rig frame),
//! `submit_image_observation`, `drive` (answered with the rig's trajectory in `local`:
//! the pose now, then one pose per waypoint, 0.2 s apart); `close_session`.
//!
//! Layers, bottom up: `pb` (the contract), `geometry` (poses, checked), `observation`
//! (deltaplan's observation from the contract's ego motion and route) and `answer` (a plan as
//! the contract's trajectory), `session` (a rollout's state), `service` (the gRPC service), and
//! [`serve`] here.

pub mod answer;
pub mod geometry;
pub mod observation;
pub mod pb;
pub mod service;
pub mod session;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::mpsc;

use deltaplan_eval::Planner;
use deltaplan_sim::SimConfig;
use tokio_stream::wrappers::TcpListenerStream;

pub use observation::Assumptions;

use crate::pb::egodriver::egodriver_service_server::EgodriverServiceServer;
use crate::service::{plan_jobs, Egodriver, MAX_MESSAGE_BYTES};

/// Observations planned together at most (drive calls of concurrent sessions).
const MAX_BATCH: usize = 256;

/// How to serve.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Address to listen on; port 0 picks a free one (reported to `on_listening`).
    pub listen: SocketAddr,
    /// What the contract does not carry.
    pub assumptions: Assumptions,
    /// What `get_version` answers, e.g. `deltaplan-0.1.0 rl (runs/default)`.
    pub version_id: String,
}

/// Why serving stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "the planner reads a bird's-eye-view raster, which the egodriver contract carries no map \
         to draw: serve a planner over the vector observation"
    )]
    RasterPlanner,
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("the gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("the gRPC server thread panicked")]
    Panicked,
}

/// Serves `planner` until `shutdown` completes (then open calls finish and it returns). The
/// planner runs on the calling thread; the gRPC server on a thread of its own, calling
/// `on_listening` with the bound address once it accepts connections.
pub fn serve(
    planner: &mut dyn Planner,
    sim: &SimConfig,
    options: &ServeOptions,
    on_listening: impl FnOnce(SocketAddr) + Send,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    if planner.bev_observation().is_some() {
        return Err(ServeError::RasterPlanner);
    }
    let (jobs, job_queue) = mpsc::channel();
    let service = Egodriver::new(jobs, *sim, options.assumptions, options.version_id.clone());
    let addr = options.listen;
    std::thread::scope(|scope| {
        let server = scope.spawn(move || -> Result<(), ServeError> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .enable_time()
                .build()
                .map_err(ServeError::Runtime)?;
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|source| ServeError::Bind { addr, source })?;
                let bound = listener
                    .local_addr()
                    .map_err(|source| ServeError::Bind { addr, source })?;
                on_listening(bound);
                let service = EgodriverServiceServer::new(service)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES);
                tonic::transport::Server::builder()
                    .add_service(service)
                    .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
                    .await?;
                Ok(())
            })
        });
        // Until the server (and with it every sender of jobs) is gone.
        plan_jobs(planner, &job_queue, sim.horizon, MAX_BATCH);
        server.join().map_err(|_| ServeError::Panicked)?
    })
}
