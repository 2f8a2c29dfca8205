//! `deltaplan serve` driven by someone else's harness: carla-driver-interface's own fake loop
//! (`carla-driver-interface demo`, the runtime side of alpasim's egodriver contract over real
//! gRPC) drives a small trained planner for 500 steps, with no contract error, and the ego
//! makes progress along the road and stays in its lane; Ctrl-C then stops the server cleanly.
//!
//! The harness is found through `DELTAPLAN_PYTHON`, else the workspace's `.venv` (`pip install
//! carla-driver-interface`). Skipped with a printed reason without it, unless
//! `DELTAPLAN_REQUIRE_SERVE=1` (CI), where that fails.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{bin, text, tmp};

const STEPS: usize = 500;

/// A Python with carla-driver-interface, or why there is none.
fn harness_python() -> Result<PathBuf, String> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = match std::env::var_os("DELTAPLAN_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => workspace.join(".venv/bin/python"),
    };
    let found = Command::new(&python)
        .args(["-c", "import carla_driver_interface"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        Ok(python)
    } else {
        Err(format!(
            "{} cannot import carla_driver_interface: `{} -m pip install carla-driver-interface` \
             (or set DELTAPLAN_PYTHON)",
            python.display(),
            python.display()
        ))
    }
}

/// Trains a small SFT planner into `out` (the regression check's sizes: it drives).
fn train_small_planner(out: &Path) {
    for stage in ["record", "train-sft"] {
        let o = bin()
            .arg(stage)
            .arg("--out")
            .arg(out)
            .args([
                "--seed",
                "1",
                "--set",
                "demos.steps=2000",
                "--set",
                "sft.epochs=3",
            ])
            .output()
            .expect("run deltaplan");
        assert!(o.status.success(), "{stage}: {}", text(&o));
    }
}

/// A running `deltaplan serve` and the address it listens on; killed if dropped.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(run: &Path, policy: &str) -> Server {
        let mut child = bin()
            .env("RUST_LOG", "info")
            .args([
                "serve",
                "--policy",
                policy,
                "--listen",
                "127.0.0.1:0",
                "--run",
            ])
            .arg(run)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start deltaplan serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_default();
        let Some(addr) = line.trim().strip_prefix("listening on ") else {
            let _ = child.kill();
            let o = child.wait_with_output().expect("server output");
            panic!("no `listening on ADDR` line ({line:?}): {}", text(&o));
        };
        Server {
            addr: addr.to_string(),
            child,
        }
    }

    /// Ctrl-C (SIGINT), then the server's exit and standard error.
    fn interrupt(mut self) -> (std::process::ExitStatus, String) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-INT", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -INT {pid}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let child = std::mem::replace(
            &mut self.child,
            Command::new("true").spawn().expect("a placeholder child"),
        );
        let o = child.wait_with_output().expect("server output");
        (o.status, text(&o))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The number after `label :` in the demo's summary.
fn summary_value(output: &str, label: &str) -> f64 {
    let line = output
        .lines()
        .find(|l| l.starts_with(label))
        .unwrap_or_else(|| panic!("no `{label}` in the demo's output:\n{output}"));
    let value = line.split(':').nth(1).unwrap_or_default().trim();
    let number = value.trim_end_matches(" m/s").trim_end_matches(" m");
    number
        .parse()
        .unwrap_or_else(|_| panic!("`{line}`: not a number"))
}

#[test]
fn the_alpasim_contract_harness_drives_the_served_planner_for_500_steps() {
    let python = match harness_python() {
        Ok(p) => p,
        Err(why) => {
            if std::env::var("DELTAPLAN_REQUIRE_SERVE").as_deref() == Ok("1") {
                panic!("DELTAPLAN_REQUIRE_SERVE=1 but {why}");
            }
            eprintln!(
                "SKIPPED the_alpasim_contract_harness_drives_the_served_planner_for_500_steps: {why}"
            );
            return;
        }
    };
    let run = tmp("serve", "harness");
    train_small_planner(&run);
    let server = Server::start(&run, "sft");

    let started = Instant::now();
    let demo = Command::new(&python)
        .args(["-m", "carla_driver_interface.cli", "demo", "--driver"])
        .arg(&server.addr)
        .args(["--steps", &STEPS.to_string()])
        // A small camera frame: the planner reads none, and the harness renders it in NumPy.
        .args(["--camera-width", "64", "--camera-height", "36"])
        .output()
        .expect("run carla-driver-interface demo");
    let seconds = started.elapsed().as_secs_f64();
    let (status, server_log) = server.interrupt();
    let out = text(&demo);
    assert!(
        demo.status.success(),
        "the harness failed:\n{out}\nserver:\n{server_log}"
    );
    eprintln!(
        "{STEPS} closed-loop steps in {seconds:.1} s ({:.0} steps/s, each: egomotion, route, \
         camera frame, drive, vehicle command)\n{out}",
        STEPS as f64 / seconds
    );
    if let Some(line) = server_log.lines().find(|l| l.contains("close_session")) {
        eprintln!("server: {line}");
    }

    // Every drive call answered, none refused, the policy never ended the session.
    assert_eq!(summary_value(&out, "steps"), STEPS as f64, "{out}");
    assert!(out.contains("terminated by policy: False"), "{out}");
    // Forward progress: 50 s of driving at more than 3 m/s on average, and still moving.
    let distance = summary_value(&out, "distance travelled");
    assert!(distance > 150.0, "only {distance} m in 50 s:\n{out}");
    let speed = summary_value(&out, "final speed");
    assert!(speed > 3.0, "final speed {speed} m/s:\n{out}");
    // In its lane: the box (1.9 m wide) inside the 3.5 m lane, 0.8 m either side of the centre.
    let lateral = summary_value(&out, "max lateral offset");
    assert!(
        lateral < 0.8,
        "left its lane: {lateral} m off the centre:\n{out}"
    );

    // Ctrl-C stopped the server cleanly, after it served every drive call.
    assert!(
        status.success(),
        "serve exited with {status}:\n{server_log}"
    );
    assert!(
        server_log.contains(&format!("after {STEPS} drive calls")),
        "{server_log}"
    );
    assert!(!server_log.contains("ERROR"), "{server_log}");
    let _ = std::fs::remove_dir_all(&run);
}
