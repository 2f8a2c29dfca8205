//! Fault injection for crash-safety tests: named points inside file writes and between a
//! stage's output and its side files, where a test can make the process die or a write fail.
//!
//! Off unless the environment asks for it, and then read once:
//! - `DELTAPLAN_FAULT=POINT[@N][,POINT[@N]...]` aborts the process (as SIGKILL would: no
//!   destructors, no flush) the N-th time (default 1) execution passes `POINT`; an entry
//!   `nan:POINT[@N]` instead makes [`inject_nan`] at `POINT` true on its N-th call (a
//!   simulator or planner that produced a NaN there);
//! - `DELTAPLAN_FAULT_ENOSPC=FILE_NAME` makes every atomic write of a file of that name fail
//!   with "No space left on device" after part of it was written (a full disk).
//!
//! Point names: `write-tmp:NAME` (the temporary file of NAME is written and synced, not yet
//! renamed), `write-done:NAME` (NAME renamed into place) and the stages' own points, listed in
//! the CLI's pipeline docs. `DELTAPLAN_FAULT_TRACE=1` prints every point passed, so a harness
//! can list them.

use std::sync::{Mutex, OnceLock};

/// Environment variable naming the points to abort at.
pub const FAULT_ENV: &str = "DELTAPLAN_FAULT";
/// Environment variable naming the file whose writes fail as on a full disk.
pub const ENOSPC_ENV: &str = "DELTAPLAN_FAULT_ENOSPC";
/// Environment variable that makes every point print its name to stderr.
pub const TRACE_ENV: &str = "DELTAPLAN_FAULT_TRACE";

struct Plan {
    /// (point, hits left before the abort).
    aborts: Mutex<Vec<(String, u64)>>,
    enospc: Option<String>,
    trace: bool,
    /// Whether anything above is set (the fast path when faults are off).
    active: bool,
}

fn plan() -> &'static Plan {
    static PLAN: OnceLock<Plan> = OnceLock::new();
    PLAN.get_or_init(|| {
        let aborts = std::env::var(FAULT_ENV)
            .unwrap_or_default()
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| match s.trim().rsplit_once('@') {
                Some((p, n)) => (p.to_string(), n.parse().unwrap_or(1)),
                None => (s.trim().to_string(), 1),
            })
            .collect::<Vec<_>>();
        let enospc = std::env::var(ENOSPC_ENV).ok().filter(|s| !s.is_empty());
        let trace = std::env::var_os(TRACE_ENV).is_some();
        Plan {
            active: trace || enospc.is_some() || !aborts.is_empty(),
            aborts: Mutex::new(aborts),
            enospc,
            trace,
        }
    })
}

/// Execution passes the named point: aborts the process if the fault plan says so. `name` is
/// only built when a plan is set, so the hook costs one load when faults are off.
pub fn point(name: impl FnOnce() -> String) {
    let p = plan();
    if !p.active {
        return;
    }
    let name = name();
    if p.trace {
        eprintln!("fault point: {name}");
    }
    let Ok(mut aborts) = p.aborts.lock() else {
        return;
    };
    if let Some((_, left)) = aborts.iter_mut().find(|(n, _)| *n == name) {
        *left = left.saturating_sub(1);
        if *left == 0 {
            eprintln!("fault injected: abort at {name}");
            std::process::abort();
        }
    }
}

/// Whether a NaN is to be injected at the named point now (see the module docs).
pub fn inject_nan(name: impl FnOnce() -> String) -> bool {
    let p = plan();
    if !p.active {
        return false;
    }
    let name = format!("nan:{}", name());
    let Ok(mut plans) = p.aborts.lock() else {
        return false;
    };
    match plans.iter_mut().find(|(n, _)| *n == name) {
        Some((_, left)) if *left > 0 => {
            *left -= 1;
            *left == 0
        }
        _ => false,
    }
}

/// Whether writes of the file named `file_name` are to fail as on a full disk.
pub fn disk_full(file_name: &str) -> bool {
    plan().enospc.as_deref() == Some(file_name)
}
