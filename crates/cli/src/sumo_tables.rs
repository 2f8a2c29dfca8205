//! The SUMO evaluations of a run as the report shows them: one titled table per evaluation
//! file that `deltaplan evaluate --world sumo` wrote (`OUT/eval/sumo_*.md`, a row per network).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use deltaplan_eval::report::WorldTable;

/// The tables of every SUMO evaluation in OUT/eval (`sumo_*.md`, written by `sumo_eval`),
/// titled by policy, split and networks, in file-name order: the report's SUMO section.
pub fn world_tables(out: &Path) -> Result<Vec<WorldTable>> {
    let dir = out.join("eval");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    let mut found: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.starts_with("sumo_") && name.ends_with(".md")
        })
        .collect();
    found.sort();
    found
        .iter()
        .map(|p| {
            let stem = p.file_stem().and_then(|n| n.to_str()).unwrap_or("");
            let mut parts = stem.trim_start_matches("sumo_").splitn(3, '_');
            let split = parts.next().unwrap_or("");
            let policy = parts.next().unwrap_or("");
            let networks = parts.next().map_or_else(
                || "the held-out generated networks".to_string(),
                |n| n.replace('_', ", "),
            );
            let table = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read {}", p.display()))?;
            let driver = match policy {
                "expert" => "route-following expert",
                "sumo-driver" => "SUMO's driver model",
                other => other,
            };
            Ok(WorldTable {
                title: format!("{driver}, {split} split, {networks}"),
                table,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn world_tables_are_titled_from_their_file_names_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let eval = dir.path().join("eval");
        std::fs::create_dir_all(&eval).unwrap();
        for (name, text) in [
            ("sumo_hard_sft.md", "| grid |"),
            ("sumo_eval_rl_town01_cologne1.md", "| town01 |"),
            ("sumo_eval_sumo-driver.md", "| spider |"),
            ("sumo_eval_expert.md", "| all |"),
            ("eval_rl.json", "not a table"),
        ] {
            std::fs::write(eval.join(name), text).unwrap();
        }
        let tables = world_tables(dir.path()).unwrap();
        let got: Vec<(&str, &str)> = tables
            .iter()
            .map(|t| (t.title.as_str(), t.table.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "route-following expert, eval split, the held-out generated networks",
                    "| all |"
                ),
                ("rl, eval split, town01, cologne1", "| town01 |"),
                (
                    "SUMO's driver model, eval split, the held-out generated networks",
                    "| spider |"
                ),
                (
                    "sft, hard split, the held-out generated networks",
                    "| grid |"
                ),
            ]
        );
        assert!(world_tables(&dir.path().join("absent")).unwrap().is_empty());
    }
}
