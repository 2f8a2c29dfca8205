//! Networks of real places, from the PyPI packages that ship them, installed beside SUMO:
//! - RESCO's city scenarios (`pip install --no-deps sumo-rl`: `sumo_rl/nets/RESCO/<name>`):
//!   Cologne and Ingolstadt networks with their calibrated demand, starting at the scenario's
//!   own begin time (its `.sumocfg`);
//! - CARLA's town maps (`pip install --no-deps py123d`:
//!   `py123d/parser/opendrive/carla_maps/<Town>.xodr.gz`), made SUMO networks by `netconvert`
//!   (passenger edges only, traffic lights as the map places them), with seeded demand made
//!   here as for generated networks ([`crate::netgen::trips`]).
//!
//! Prepared files go to a directory of the caller's (an existing network is reused); the
//! packages' own files are only read.

use crate::locate::SumoBinaries;
use crate::netgen::{ego_type_line, run_tool, write_demand, NetFiles, NetgenError};
use deltaplan_stdx::fs::{tmp_path, write_atomic};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A network of a real place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Map {
    /// A RESCO scenario of sumo-rl by name: `cologne1`, `cologne3`, `cologne8`,
    /// `ingolstadt1`, `ingolstadt7`, `ingolstadt21`.
    Resco(String),
    /// A CARLA town of py123d by name: `Town01` ... `Town07`, `Town10HD`, `Town12`, ...
    CarlaTown(String),
}

/// Why a map could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum MapError {
    #[error(
        "network name {0:?} is not `resco:NAME` (e.g. resco:cologne1) or `carla:TOWN` (e.g. carla:Town01)"
    )]
    Name(String),
    #[error(
        "{what} not found at {path}: install it into the environment SUMO comes from, e.g. `.venv/bin/pip install --no-deps {package}`"
    )]
    Missing {
        what: String,
        path: PathBuf,
        package: &'static str,
    },
    #[error("{path}: {problem}")]
    Scenario { path: PathBuf, problem: String },
    #[error(transparent)]
    Netgen(#[from] NetgenError),
}

impl Map {
    /// `resco:NAME` or `carla:TOWN`.
    pub fn parse(name: &str) -> Result<Self, MapError> {
        let valid = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        };
        match name.split_once(':') {
            Some(("resco", n)) if valid(n) => Ok(Map::Resco(n.to_string())),
            Some(("carla", n)) if valid(n) => Ok(Map::CarlaTown(n.to_string())),
            _ => Err(MapError::Name(name.to_string())),
        }
    }

    /// The network's name in tables (`cologne1`, `town01`).
    pub fn name(&self) -> String {
        match self {
            Map::Resco(n) => n.clone(),
            Map::CarlaTown(n) => n.to_lowercase(),
        }
    }

    /// Prepares the map's network and demand in `dir`: RESCO's own demand, or for a CARLA town
    /// `vehicles_per_hour` of trips drawn from `seed`.
    pub fn prepare(
        &self,
        bins: &SumoBinaries,
        dir: &Path,
        seed: u64,
        vehicles_per_hour: u32,
    ) -> Result<NetFiles, MapError> {
        let packages = bins
            .home()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_default();
        std::fs::create_dir_all(dir).map_err(|source| NetgenError::Write {
            path: dir.to_path_buf(),
            source,
        })?;
        match self {
            Map::Resco(name) => resco(&packages, dir, name),
            Map::CarlaTown(town) => carla_town(bins, &packages, dir, town, seed, vehicles_per_hour),
        }
    }
}

/// A RESCO scenario: its network, its demand, its begin time, and the ego's vehicle type in a
/// route file of its own.
fn resco(packages: &Path, dir: &Path, name: &str) -> Result<NetFiles, MapError> {
    let scenario = packages.join("sumo_rl/nets/RESCO").join(name);
    let cfg_path = scenario.join(format!("{name}.sumocfg"));
    if !cfg_path.is_file() {
        return Err(MapError::Missing {
            what: format!("RESCO scenario {name}"),
            path: cfg_path,
            package: "sumo-rl",
        });
    }
    let bad = |problem: String| MapError::Scenario {
        path: cfg_path.clone(),
        problem,
    };
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| bad(e.to_string()))?;
    let doc = roxmltree::Document::parse(&text).map_err(|e| bad(e.to_string()))?;
    let value = |tag: &str| {
        doc.descendants()
            .find(|n| n.has_tag_name(tag))
            .and_then(|n| n.attribute("value"))
            .ok_or_else(|| bad(format!("no <{tag} value=...>")))
    };
    let net = scenario.join(value("net-file")?);
    let mut routes: Vec<PathBuf> = value("route-files")?
        .split(',')
        .map(|r| scenario.join(r.trim()))
        .collect();
    let begin: f64 = value("begin")?
        .parse()
        .map_err(|_| bad("begin is not a number".into()))?;
    let ego = dir.join("ego.rou.xml");
    let xml = format!("<routes>\n{}</routes>\n", ego_type_line());
    write_atomic(&ego, xml.as_bytes()).map_err(|source| NetgenError::Write {
        path: ego.clone(),
        source,
    })?;
    routes.push(ego);
    Ok(NetFiles {
        name: name.to_string(),
        net,
        routes,
        begin,
    })
}

/// A CARLA town converted by netconvert, with seeded trips.
fn carla_town(
    bins: &SumoBinaries,
    packages: &Path,
    dir: &Path,
    town: &str,
    seed: u64,
    vehicles_per_hour: u32,
) -> Result<NetFiles, MapError> {
    let xodr = packages
        .join("py123d/parser/opendrive/carla_maps")
        .join(format!("{town}.xodr.gz"));
    if !xodr.is_file() {
        return Err(MapError::Missing {
            what: format!("CARLA town {town}"),
            path: xodr,
            package: "py123d",
        });
    }
    let name = town.to_lowercase();
    let net = dir.join(format!("{name}.net.xml"));
    if !net.is_file() {
        let mut c = Command::new(bins.sumo.with_file_name("netconvert"));
        c.arg("--opendrive-files")
            .arg(&xodr)
            .args(["--keep-edges.by-vclass", "passenger"])
            .args(["--no-turnarounds", "true", "--junctions.join", "true"])
            .arg("-o")
            .arg(tmp_path(&net));
        run_tool(bins, c, &net)?;
    }
    let routes = dir.join(format!("{name}-{seed}-{vehicles_per_hour}.rou.xml"));
    write_demand(&net, &routes, seed, vehicles_per_hour)?;
    Ok(NetFiles {
        name,
        net,
        routes: vec![routes],
        begin: 0.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_bad_ones_say_the_forms() {
        assert_eq!(
            Map::parse("resco:cologne1").unwrap(),
            Map::Resco("cologne1".into())
        );
        assert_eq!(
            Map::parse("carla:Town10HD").unwrap(),
            Map::CarlaTown("Town10HD".into())
        );
        assert_eq!(Map::parse("carla:Town01").unwrap().name(), "town01");
        for bad in ["cologne1", "resco:", "carla:../../etc", "osm:berlin"] {
            let e = Map::parse(bad).unwrap_err().to_string();
            assert!(e.contains("resco:NAME") && e.contains(bad), "{e}");
        }
    }
}
