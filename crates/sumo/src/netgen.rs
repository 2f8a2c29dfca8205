//! Generated networks and demand: `netgenerate` grids and spiders from a seed, with traffic
//! lights, and seeded trips between random edges that SUMO routes itself (its router runs
//! at insertion; no Python on the path).

use crate::locate::SumoBinaries;
use crate::net::Network;
use deltaplan_sim::config::VehicleParams;
use deltaplan_stdx::fs::write_atomic;
use deltaplan_stdx::seed::rng;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The kinds of generated network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetKind {
    /// A Manhattan grid of signalised 4-way junctions.
    Grid,
    /// A spider web: radial arms and rings.
    Spider,
}

impl NetKind {
    pub fn name(self) -> &'static str {
        match self {
            NetKind::Grid => "grid",
            NetKind::Spider => "spider",
        }
    }
}

/// A network and its demand, on disk: generated here ([`generate`]) or of a real place
/// (module `maps`).
#[derive(Clone, Debug, PartialEq)]
pub struct NetFiles {
    /// The network's name in messages and tables (`grid-5`, `cologne1`, `town01`).
    pub name: String,
    pub net: PathBuf,
    /// Demand, SUMO's `-r` (one of the files defines the ego's vehicle type, `ego`).
    pub routes: Vec<PathBuf>,
    /// When the demand starts (SUMO's `--begin`), seconds: 0 for demand made here, the
    /// scenario's own for calibrated demand (RESCO's Cologne starts at 25,200 s, 7 am).
    pub begin: f64,
}

/// Why a network could not be generated.
#[derive(Debug, thiserror::Error)]
pub enum NetgenError {
    #[error("running {binary}: {source}")]
    Spawn {
        binary: PathBuf,
        source: std::io::Error,
    },
    #[error("{binary} failed ({status}): {stderr}")]
    Failed {
        binary: PathBuf,
        status: String,
        stderr: String,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Net(#[from] crate::net::NetError),
}

/// Generates network `kind` from `seed` into `dir` (files named by kind and seed; an existing
/// network is reused) with `vehicles_per_hour` of demand over an hour.
pub fn generate(
    bins: &SumoBinaries,
    dir: &Path,
    kind: NetKind,
    seed: u64,
    vehicles_per_hour: u32,
) -> Result<NetFiles, NetgenError> {
    std::fs::create_dir_all(dir).map_err(|source| NetgenError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let stem = format!("{}-{seed}", kind.name());
    let net = dir.join(format!("{stem}.net.xml"));
    let routes = dir.join(format!("{stem}-{vehicles_per_hour}.rou.xml"));
    if !net.is_file() {
        let mut r = rng(seed, 0x4e45_5447);
        use rand::RngExt;
        let mut c = Command::new(&bins.netgenerate);
        match kind {
            NetKind::Grid => {
                let n = r.random_range(3..=5u32);
                let len = r.random_range(100..=180u32);
                c.args(["--grid", "--grid.number", &n.to_string()])
                    .args(["--grid.length", &len.to_string()]);
            }
            NetKind::Spider => {
                let arms = r.random_range(4..=6u32);
                let circles = r.random_range(2..=4u32);
                let radius = r.random_range(80..=140u32);
                c.args(["--spider", "--spider.arm-number", &arms.to_string()])
                    .args(["--spider.circle-number", &circles.to_string()])
                    .args(["--spider.space-radius", &radius.to_string()])
                    .args(["--spider.omit-center", "true"]);
            }
        }
        let lanes = 1 + (seed % 2);
        // Lanes as wide as the built-in world's (3.5 m, SUMO's default is 3.2) and turns of a
        // 10 m radius (SUMO's default 4 m): with SUMO's tightest corners the ego's inner rear
        // corner sweeps over the kerb of a right turn on any path its controller can follow.
        c.args(["-L", &lanes.to_string(), "--tls.guess", "true"])
            .args([
                "--default.lanewidth",
                "3.5",
                "--default.junctions.radius",
                "10",
            ])
            .args([
                "--no-turnarounds",
                "true",
                "--seed",
                &(seed % 1_000_000).to_string(),
            ])
            .arg("-o")
            .arg(deltaplan_stdx::fs::tmp_path(&net));
        run_tool(bins, c, &net)?;
    }
    write_demand(&net, &routes, seed, vehicles_per_hour)?;
    Ok(NetFiles {
        name: stem,
        net,
        routes: vec![routes],
        begin: 0.0,
    })
}

/// Runs a SUMO tool (`command`, which writes `out`'s temporary) and renames its output into
/// place: a failed run leaves no network behind, and its message is the tool's own.
pub(crate) fn run_tool(
    bins: &SumoBinaries,
    mut command: Command,
    out: &Path,
) -> Result<(), NetgenError> {
    if let Some(home) = bins.home() {
        command.env("SUMO_HOME", home);
    }
    let binary = PathBuf::from(command.get_program());
    let run = command.output().map_err(|source| NetgenError::Spawn {
        binary: binary.clone(),
        source,
    })?;
    if !run.status.success() {
        return Err(NetgenError::Failed {
            binary,
            status: run.status.to_string(),
            stderr: String::from_utf8_lossy(&run.stderr).into_owned(),
        });
    }
    let tmp = deltaplan_stdx::fs::tmp_path(out);
    std::fs::rename(&tmp, out).map_err(|source| NetgenError::Write {
        path: out.to_path_buf(),
        source,
    })
}

/// Writes `routes`, seeded trips on the network `net` ([`trips`]), unless it exists.
pub(crate) fn write_demand(
    net: &Path,
    routes: &Path,
    seed: u64,
    per_hour: u32,
) -> Result<(), NetgenError> {
    if routes.is_file() {
        return Ok(());
    }
    let network = Network::from_file(net)?;
    write_atomic(routes, trips(&network, seed, per_hour).as_bytes()).map_err(|source| {
        NetgenError::Write {
            path: routes.to_path_buf(),
            source,
        }
    })
}

/// The ego's vehicle type, `ego`, as a `<vType>` line: the built-in world's vehicle size, so
/// SUMO's drivers see the box deltaplan checks collisions with.
pub fn ego_type_line() -> String {
    let ego = VehicleParams::default();
    format!(
        "    <vType id=\"ego\" length=\"{}\" width=\"{}\" minGap=\"0\"/>\n",
        ego.length, ego.width
    )
}

/// Seeded demand: `per_hour` trips spread evenly over an hour between random distinct normal
/// edges (SUMO finds each route when the trip departs; unreachable pairs are skipped by SUMO
/// with `--ignore-route-errors`-like behaviour of trips).
pub fn trips(net: &Network, seed: u64, per_hour: u32) -> String {
    use rand::RngExt;
    let edges: Vec<&str> = net
        .edges
        .iter()
        .enumerate()
        .filter(|(i, e)| !e.internal && !net.car_lanes(*i).is_empty())
        .map(|(_, e)| e.id.as_str())
        .collect();
    let mut r = rng(seed, 0x5452_4950);
    let mut s = String::from("<routes>\n    <vType id=\"car\" length=\"4.5\" width=\"1.8\" accel=\"2.6\" decel=\"4.5\" sigma=\"0.5\" maxSpeed=\"16\"/>\n");
    s.push_str(&ego_type_line());
    let period = 3600.0 / per_hour.max(1) as f64;
    for k in 0..per_hour {
        let from = edges[r.random_range(0..edges.len())];
        let mut to = edges[r.random_range(0..edges.len())];
        if to == from {
            to = edges[(edges.iter().position(|e| *e == to).unwrap_or(0) + 1) % edges.len()];
        }
        let _ = writeln!(
            s,
            "    <trip id=\"t{k}\" type=\"car\" depart=\"{:.2}\" from=\"{from}\" to=\"{to}\" departLane=\"best\" departSpeed=\"max\"/>",
            k as f64 * period
        );
    }
    s.push_str("</routes>\n");
    s
}
