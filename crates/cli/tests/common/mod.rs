//! What every CLI test needs: the built binary, a fresh scratch directory, its output as text.
// Each test binary uses its own subset.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

/// The `deltaplan` binary, quiet and without progress bars.
pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_deltaplan"));
    c.env("RUST_LOG", "warn").env("CI", "1");
    c
}

/// An empty scratch path `deltaplan-<suite>-<name>-<pid>` under the temp directory.
pub fn tmp(suite: &str, name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("deltaplan-{suite}-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Standard output then standard error.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
