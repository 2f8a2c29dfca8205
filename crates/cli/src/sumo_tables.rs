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
            let table = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read {}", p.display()))?;
            // A file name lists at most three maps (`..._and_5_more_HASH`): the table's rows
            // name them all.
            let networks = parts.next().map_or_else(
                || "the held-out generated networks".to_string(),
                |n| {
                    let rows = network_rows(&table);
                    if rows.is_empty() {
                        n.replace('_', ", ")
                    } else {
                        rows.join(", ")
                    }
                },
            );
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

/// The networks a per-network table lists: the first cell of each row below its header
/// separator, except the `all` row.
fn network_rows(table: &str) -> Vec<&str> {
    table
        .lines()
        .skip_while(|l| !l.starts_with("|---"))
        .skip(1)
        .filter_map(|l| l.trim().trim_start_matches('|').split('|').next())
        .map(str::trim)
        .filter(|n| !n.is_empty() && *n != "all")
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn world_tables_are_titled_by_policy_split_and_every_network_in_file_order() {
        let dir = tempfile::tempdir().unwrap();
        let eval = dir.path().join("eval");
        std::fs::create_dir_all(&eval).unwrap();
        for (name, text) in [
            ("sumo_hard_sft.md", "| grid |"),
            ("sumo_eval_rl_town01_cologne1.md", "| town01 |"),
            ("sumo_eval_sumo-driver.md", "| spider |"),
            ("sumo_eval_expert.md", "| all |"),
            ("eval_rl.json", "not a table"),
            (
                "sumo_eval_sft_town01_town02_town03_and_2_more_0c1d2e3f.md",
                "| network | episodes |\n|---|---:|\n| town01 | 10 |\n| town02 | 10 |\n\
                 | town03 | 10 |\n| town04 | 10 |\n| town10hd | 10 |\n| all | 50 |\n",
            ),
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
                    "sft, eval split, town01, town02, town03, town04, town10hd",
                    "| network | episodes |\n|---|---:|\n| town01 | 10 |\n| town02 | 10 |\n\
                     | town03 | 10 |\n| town04 | 10 |\n| town10hd | 10 |\n| all | 50 |\n",
                ),
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
