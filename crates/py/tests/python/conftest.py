"""Shared fixtures: a deliberately weak SFT planner, trained once per session from Python with
the CLI's stages (few demonstrations of the cut-in family, a short training), so that a
residual has something to fix."""

import os

import pytest

import deltaplan

# The weak planner's recipe (the Rust test `refinement_beats_an_imperfect_sft_planner_in_closed_loop`
# uses the same one).
WEAK_SFT = {
    "seed": 3,
    "train_scenarios.families": ["cut_in"],
    "demos.n_envs": 32,
    "demos.steps": 150,
    "sft.hidden": [64],
    "sft.z_dim": 32,
    "sft.head_hidden": [],
    "sft.epochs": 6,
    "sft.patience": 1000,  # never stops early in 6 epochs (the CLI has no "None")
}


@pytest.fixture(scope="session")
def weak_sft(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("weak_sft")
    path, ade = deltaplan.record_and_train_sft(str(out), WEAK_SFT)
    assert os.path.exists(path) and ade > 0.0
    return path


def require_sb3():
    """SB3 tests skip when SB3 is not installed, except where DELTAPLAN_REQUIRE_SB3=1 (CI)."""
    if os.environ.get("DELTAPLAN_REQUIRE_SB3") == "1":
        import stable_baselines3  # noqa: F401 (fails loudly)
    return pytest.importorskip("stable_baselines3")


def require_ray():
    """Ray tests skip when Ray is not installed, except where DELTAPLAN_REQUIRE_RAY=1 (CI)."""
    if os.environ.get("DELTAPLAN_REQUIRE_RAY") == "1":
        import ray  # noqa: F401 (fails loudly)
    return pytest.importorskip("ray")


def load_safetensors(path: str) -> dict:
    """The float32 tensors of a safetensors file as NumPy arrays (the format: an 8-byte
    little-endian header length, a JSON header of dtype/shape/offsets, the raw data), so the
    tests need no `safetensors` package."""
    import json
    import struct

    import numpy as np

    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32", (name, info["dtype"])
        start, end = info["data_offsets"]
        tensors[name] = np.frombuffer(data[start:end], dtype="<f4").reshape(info["shape"]).copy()
    return tensors
