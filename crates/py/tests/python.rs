//! Runs the Python package's tests (crates/py/tests/python, pytest) against the extension
//! module this `cargo test` just built, so the README's one test command covers Rust and Python.
//!
//! The interpreter: `$DELTAPLAN_PYTHON`, else the workspace's `.venv/bin/python` (what `.ci/run`
//! and the README's install command create), else `python3` with the packages installed into a
//! virtual environment under the target directory (`pip install` of numpy, gymnasium, pytest:
//! registry access the first time). Skipped, loudly, only when no Python 3.11+ exists. The
//! SB3 tests skip when stable-baselines3 is not installed, unless `DELTAPLAN_REQUIRE_SB3=1`, and
//! the Ray tests when ray is not, unless `DELTAPLAN_REQUIRE_RAY=1` (CI sets both).

use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// target/<profile>: this test binary lives in target/<profile>/deps.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>")
        .to_path_buf()
}

fn python_works(python: &Path) -> bool {
    Command::new(python)
        .args(["-c", "import sys; assert sys.version_info >= (3, 11)"])
        .status()
        .is_ok_and(|s| s.success())
}

fn has_packages(python: &Path) -> bool {
    Command::new(python)
        .args(["-c", "import numpy, gymnasium, pytest"])
        .status()
        .is_ok_and(|s| s.success())
}

/// An interpreter with numpy, gymnasium and pytest, or None when there is no Python 3.11+.
fn interpreter() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("DELTAPLAN_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let venv = workspace().join(".venv/bin/python");
    if python_works(&venv) && has_packages(&venv) {
        return Some(venv);
    }
    let system = PathBuf::from("python3");
    if !python_works(&system) {
        return None;
    }
    let own = profile_dir().join("py-test-venv");
    let own_python = own.join("bin/python");
    if !(python_works(&own_python) && has_packages(&own_python)) {
        let ok = Command::new(&system)
            .args(["-m", "venv"])
            .arg(&own)
            .status()
            .is_ok_and(|s| s.success())
            && Command::new(&own_python)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "-q",
                    "numpy>=1.26",
                    "gymnasium>=1.0",
                    "pytest>=8",
                ])
                .status()
                .is_ok_and(|s| s.success());
        assert!(
            ok,
            "could not create {} with numpy, gymnasium and pytest (pip needs PyPI)",
            own.display()
        );
    }
    Some(own_python)
}

/// Builds the extension module and the `deltaplan` binary (the stage tests compare the two)
/// with the profile of this test run: `cargo test` builds the package's test targets but not
/// its cdylib, nor another package's binary.
fn build_extension_module() {
    let profile = profile_dir();
    let profile = profile
        .file_name()
        .and_then(|p| p.to_str())
        .expect("target/<profile>");
    let mut cargo = Command::new(env!("CARGO"));
    cargo.args([
        "build",
        "-p",
        "deltaplan-py",
        "--lib",
        "-p",
        "deltaplan",
        "--bin",
        "deltaplan",
    ]);
    if profile != "debug" {
        cargo.args(["--profile", profile]);
    }
    let status = cargo
        .current_dir(workspace())
        .status()
        .expect("run cargo build");
    assert!(
        status.success(),
        "cargo build -p deltaplan-py -p deltaplan failed"
    );
}

/// The package directory: the Python sources beside the freshly built extension module.
fn stage_package() -> PathBuf {
    build_extension_module();
    let site = profile_dir().join("py-test-site");
    let pkg = site.join("deltaplan");
    let _ = std::fs::remove_dir_all(&pkg);
    std::fs::create_dir_all(&pkg).expect("create the staged package directory");
    let src = workspace().join("crates/py/python/deltaplan");
    for entry in std::fs::read_dir(&src).expect("crates/py/python/deltaplan") {
        let path = entry.expect("directory entry").path();
        if path.extension().is_some_and(|e| e == "py") {
            std::fs::copy(&path, pkg.join(path.file_name().expect("file name")))
                .expect("copy a Python source");
        }
    }
    let lib = profile_dir().join("libdeltaplan_native.so");
    assert!(
        lib.exists(),
        "{} is missing: `cargo test --workspace --release` builds it",
        lib.display()
    );
    std::fs::copy(&lib, pkg.join("_native.abi3.so")).expect("copy the extension module");
    site
}

#[test]
fn python_package_tests_pass() {
    let Some(python) = interpreter() else {
        eprintln!(
            "\n\n*** SKIPPED: the Python package's tests (crates/py/tests/python) need Python 3.11+ \
             (python3 not found). Install it to run them. ***\n\n"
        );
        return;
    };
    let site = stage_package();
    let status = Command::new(&python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "-x"])
        .arg(workspace().join("crates/py/tests/python"))
        .env("PYTHONPATH", &site)
        .env("DELTAPLAN_CLI", profile_dir().join("deltaplan"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .status()
        .expect("run pytest");
    assert!(
        status.success(),
        "the Python package's tests failed (pytest output above)"
    );
}
