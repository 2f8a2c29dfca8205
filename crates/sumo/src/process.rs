//! One SUMO process under remote control: started with `--remote-port` on a free local port,
//! connected with a read timeout, killed when dropped (never left behind).

use crate::locate::SumoBinaries;
use crate::traci::{Client, Request, TraciError};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What a SUMO simulation runs: the network and demand files and its seed.
#[derive(Clone, Debug, PartialEq)]
pub struct SumoRun {
    pub net: PathBuf,
    pub routes: Vec<PathBuf>,
    /// Simulation begin time (SUMO's `--begin`), seconds.
    pub begin: f64,
    pub seed: u64,
    /// Simulation step, seconds.
    pub step_length: f32,
    /// How long one answer may take before SUMO counts as hung.
    pub timeout: Duration,
}

/// Why a SUMO process could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot start {binary}: {source}")]
    Spawn {
        binary: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "SUMO ({binary}) exited before answering ({status}); to see its own message, run: {binary} {args}"
    )]
    Exited {
        binary: PathBuf,
        status: std::process::ExitStatus,
        args: String,
    },
    #[error("SUMO did not accept a connection within {0:?}")]
    NoConnection(Duration),
    #[error("no free local port: {0}")]
    Port(std::io::Error),
    #[error(transparent)]
    Traci(#[from] TraciError),
}

/// A running SUMO and the connection to it.
pub struct SumoProcess {
    child: Child,
    pub client: Client,
    pub port: u16,
}

impl SumoProcess {
    /// Starts SUMO on `run` and connects. Collisions are detected by deltaplan (SUMO's own
    /// collision handling is off: nothing teleports or vanishes on contact).
    pub fn start(bins: &SumoBinaries, run: &SumoRun) -> Result<Self, StartError> {
        let port = free_port().map_err(StartError::Port)?;
        let args: Vec<String> = vec![
            "-n".into(),
            path_arg(&run.net),
            "-r".into(),
            run.routes
                .iter()
                .map(|r| path_arg(r))
                .collect::<Vec<_>>()
                .join(","),
            "--begin".into(),
            format!("{}", run.begin),
            "--remote-port".into(),
            port.to_string(),
            "--step-length".into(),
            format!("{}", run.step_length),
            "--seed".into(),
            (run.seed % (i32::MAX as u64)).to_string(),
            "--collision.action".into(),
            "none".into(),
            "--no-step-log".into(),
            "true".into(),
            "--no-warnings".into(),
            "true".into(),
            "--duration-log.disable".into(),
            "true".into(),
            "--time-to-teleport".into(),
            "120".into(),
        ];
        let mut command = Command::new(&bins.sumo);
        command
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(if std::env::var_os("DELTAPLAN_SUMO_STDERR").is_some() {
                // Debugging: SUMO's own messages on this process's stderr.
                Stdio::inherit()
            } else {
                Stdio::null()
            });
        if let Some(home) = bins.home() {
            command.env("SUMO_HOME", home);
        }
        let mut child = command.spawn().map_err(|source| StartError::Spawn {
            binary: bins.sumo.clone(),
            source,
        })?;
        let t0 = Instant::now();
        let wait = Duration::from_secs(20);
        let client = loop {
            match Client::connect(port, run.timeout) {
                Ok(c) => break c,
                Err(_) if t0.elapsed() < wait => {
                    if let Ok(Some(status)) = child.try_wait() {
                        return Err(StartError::Exited {
                            binary: bins.sumo.clone(),
                            status,
                            args: args.join(" "),
                        });
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(StartError::NoConnection(wait));
                }
            }
        };
        let mut p = SumoProcess {
            child,
            client,
            port,
        };
        let mut req = Request::default();
        req.set_order(1);
        if let Err(e) = p.client.send_checked(&req) {
            // SUMO listens before it reads its files: a file it refuses ends it here.
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(1) {
                if let Ok(Some(status)) = p.child.try_wait() {
                    return Err(StartError::Exited {
                        binary: bins.sumo.clone(),
                        status,
                        args: args.join(" "),
                    });
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            return Err(e.into());
        }
        Ok(p)
    }

    /// The operating system's id of the SUMO process.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process has ended.
    pub fn has_exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for SumoProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn path_arg(p: &Path) -> String {
    p.display().to_string()
}

/// A local port nobody listens on now (the OS's choice for port 0).
fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}
