//! Where SUMO's binaries are: `DELTAPLAN_SUMO` (the `sumo` binary itself), else
//! `SUMO_HOME/bin`, else the `sumo` package of a `.venv` (the current directory's, then the
//! workspace's: what `.ci/run` and the README's setup install, `pip install eclipse-sumo`).

use std::path::{Path, PathBuf};

/// The SUMO binaries this crate runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SumoBinaries {
    pub sumo: PathBuf,
    pub netgenerate: PathBuf,
}

/// No SUMO was found; the message says where it looked and how to install it.
#[derive(Debug, thiserror::Error)]
#[error("SUMO not found (looked at {looked}); install it with `python3 -m venv .venv && .venv/bin/pip install eclipse-sumo` in the workspace, or set DELTAPLAN_SUMO to the `sumo` binary or SUMO_HOME to its installation")]
pub struct SumoNotFound {
    pub looked: String,
}

impl SumoBinaries {
    /// Finds SUMO as the module documentation says; `workspace` is the directory whose `.venv`
    /// is searched.
    pub fn locate(workspace: &Path) -> Result<Self, SumoNotFound> {
        let mut looked = Vec::new();
        let mut candidates = Vec::new();
        if let Some(p) = std::env::var_os("DELTAPLAN_SUMO") {
            let sumo = PathBuf::from(p);
            if let Some(dir) = sumo.parent() {
                candidates.push((sumo.clone(), dir.join("netgenerate")));
            }
        }
        if let Some(home) = std::env::var_os("SUMO_HOME") {
            let bin = PathBuf::from(home).join("bin");
            candidates.push((bin.join("sumo"), bin.join("netgenerate")));
        }
        if let Ok(entries) = std::fs::read_dir(workspace.join(".venv/lib")) {
            for e in entries.flatten() {
                let bin = e.path().join("site-packages/sumo/bin");
                candidates.push((bin.join("sumo"), bin.join("netgenerate")));
            }
        }
        for (sumo, netgenerate) in candidates {
            if sumo.is_file() && netgenerate.is_file() {
                return Ok(SumoBinaries { sumo, netgenerate });
            }
            looked.push(sumo.display().to_string());
        }
        if looked.is_empty() {
            looked.push(format!(
                "DELTAPLAN_SUMO, SUMO_HOME and {}",
                workspace.join(".venv").display()
            ));
        }
        Err(SumoNotFound {
            looked: looked.join(", "),
        })
    }

    /// `locate` from the current directory, then from the workspace this crate was built in.
    pub fn locate_default() -> Result<Self, SumoNotFound> {
        let built_in = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        match std::env::current_dir() {
            Ok(cwd) if cwd.join(".venv").is_dir() => {
                Self::locate(&cwd).or_else(|_| Self::locate(&built_in))
            }
            _ => Self::locate(&built_in),
        }
    }

    /// SUMO's installation directory (the parent of `bin`), which SUMO wants in `SUMO_HOME`
    /// to find its data files.
    pub fn home(&self) -> Option<&Path> {
        self.sumo.parent().and_then(Path::parent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_sumo_names_where_it_looked_and_the_fix() {
        if std::env::var_os("DELTAPLAN_SUMO").is_some() || std::env::var_os("SUMO_HOME").is_some() {
            eprintln!("SKIPPED: DELTAPLAN_SUMO or SUMO_HOME is set");
            return;
        }
        let empty = std::env::temp_dir().join(format!("deltaplan-no-sumo-{}", std::process::id()));
        std::fs::create_dir_all(&empty).unwrap();
        let e = SumoBinaries::locate(&empty).unwrap_err().to_string();
        assert!(e.contains(".venv/bin/pip install eclipse-sumo"), "{e}");
        assert!(
            e.contains("DELTAPLAN_SUMO") && e.contains(&empty.display().to_string()),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&empty);
    }
}
