"""The CLI's stages from Python: the same configuration and files as the ``deltaplan`` binary,
bit for bit."""

import json
import os
import subprocess
from pathlib import Path

import pytest

import deltaplan

# The CI smoke run's configuration: 6 iterations = 3 of critic warm-up + 3 actor updates.
TINY = {
    "seed": 5,
    "demos.steps": 200,
    "sft.epochs": 3,
    "refine.num_envs": 16,
    "refine.rollout_steps": 32,
    "refine.iterations": 6,
    "eval.per_family": 2,
    "eval.examples": 1,
}
THREADS = 2


def cli() -> Path:
    """The ``deltaplan`` binary crates/py/tests/python.rs built beside the module."""
    path = Path(os.environ.get("DELTAPLAN_CLI", Path(__file__).parents[4] / "target/release/deltaplan"))
    assert path.exists(), f"{path} is missing: run the tests through `cargo test --release` (crates/py/tests/python.rs)"
    return path


def cli_sets(config: dict) -> list[str]:
    args = []
    for key, value in config.items():
        if key == "seed":
            args += ["--seed", str(value)]
        else:
            args += ["--set", f"{key}={json.dumps(value)}"]
    return args


def comparable(report: dict) -> dict:
    """report.json without what measures time or names the directory."""
    r = dict(report)
    for key in ("wall_seconds", "timings", "examples", "notes"):
        r.pop(key, None)
    return r


def test_stages_from_python_write_what_the_cli_writes_bit_for_bit(tmp_path):
    py, native = tmp_path / "py", tmp_path / "cli"
    # Each stage on its own, as the CLI's subcommands would be called.
    deltaplan.record(py, TINY, THREADS)
    sft = deltaplan.train_sft(py, TINY, THREADS)
    rl = deltaplan.refine(py, TINY, THREADS)
    for split in ("eval", "hard"):
        for policy in ("expert", "sft", "rl"):
            path = deltaplan.evaluate_policy(py, policy, split, TINY, THREADS)
            assert Path(path) == py / "eval" / f"{split}_{policy}.json"
    report_md = deltaplan.report(py, TINY, THREADS)
    assert Path(report_md).exists() and Path(sft).exists() and Path(rl).exists()

    subprocess.run([cli(), "run", "--out", native, "--threads", str(THREADS), *cli_sets(TINY)],
                   check=True, capture_output=True)

    ours = json.loads((py / "report.json").read_text())
    theirs = json.loads((native / "report.json").read_text())
    assert comparable(ours) == comparable(theirs)
    # Every number of the report is there, and the refined planner was trained (the actor
    # moved after the warm-up, so RL differs from SFT somewhere).
    assert ours["splits"]["eval"]["rl"]["driving_score"] == theirs["splits"]["eval"]["rl"]["driving_score"]
    assert ours["actor_start"]["iteration"] == 4
    # The stages' files: same bytes.
    for name in ("run.toml", "demos.safetensors", "sft.safetensors", "rl.safetensors",
                 "eval/eval_sft.json", "eval/hard_rl.json", "eval/hard/rl/carla_leaderboard.json"):
        assert (py / name).read_bytes() == (native / name).read_bytes(), name

    # The CLI continues a run Python made: same configuration, nothing left to do.
    again = subprocess.run([cli(), "refine", "--out", py, "--threads", str(THREADS), *cli_sets(TINY)],
                           check=True, capture_output=True, text=True)
    assert "refinement already complete" in again.stderr


def test_run_is_the_whole_pipeline_and_refuses_another_runs_directory(tmp_path):
    out = tmp_path / "run"
    small = {**TINY, "refine.iterations": 1, "eval.per_family": 1, "eval.examples": 0}
    report_md = deltaplan.run(out, small, THREADS)
    report = json.loads((out / "report.json").read_text())
    assert Path(report_md) == out / "report.md"
    assert report["env_steps"] == 16 * 32
    assert len(report["learning_curve"]) <= 1
    with pytest.raises(deltaplan.StageError, match="another run"):
        deltaplan.refine(out, {**small, "seed": 6}, THREADS)


def test_configuration_is_the_clis_with_its_messages():
    defaults = deltaplan.default_settings()
    assert defaults["eval"]["per_family"] == 200 and defaults["checkpoint_every"] == 10
    with pytest.raises(deltaplan.ConfigError, match="demos.seed is derived from `seed`"):
        deltaplan.run("/nonexistent", {"demos.seed": 3})
    with pytest.raises(deltaplan.ConfigError, match="unknown configuration key `refine.iteratons`"):
        deltaplan.refine("/nonexistent", {"refine": {"iteratons": 3}})
    with pytest.raises(deltaplan.ConfigError, match="`sft.patience` is None"):
        deltaplan.train_sft("/nonexistent", {"sft.patience": None})
    with pytest.raises(deltaplan.ConfigError, match="policy must be"):
        deltaplan.evaluate_policy("/nonexistent", "best")
