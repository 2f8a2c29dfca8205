"""A PyTorch module with the built-in SFT planner's weights, evaluated in closed loop from
Python, drives the episodes the Rust planner drives: same ends and lengths, metrics within
float noise (the two forwards differ in the last bits: summation order of the matmuls and the
tanh approximation, and closed-loop driving carries those bits along)."""

import json
import os

import numpy as np
import pytest

import deltaplan
from conftest import WEAK_SFT, load_safetensors


def torch_or_skip():
    if os.environ.get("DELTAPLAN_REQUIRE_SB3") == "1":
        import torch  # noqa: F401 (fails loudly: torch comes with SB3 in CI)
    return pytest.importorskip("torch")


def torch_sft(path: str):
    """The SFT planner's architecture in PyTorch, with its weights from ``sft.safetensors``:
    ``plan = act_mean + act_scale * head(tanh(encoder(clip((obs - mean) / std))))``."""
    torch = torch_or_skip()
    t = {k: torch.from_numpy(v) for k, v in load_safetensors(path).items()}

    def mlp(prefix):
        idx = sorted({int(k.split(".")[1]) for k in t if k.startswith(prefix + ".")})
        layers = []
        for j, i in enumerate(idx):
            w = t[f"{prefix}.{i}.weight"]
            linear = torch.nn.Linear(w.shape[1], w.shape[0])
            linear.weight.data.copy_(w)
            linear.bias.data.copy_(t[f"{prefix}.{i}.bias"])
            layers.append(linear)
            if j + 1 < len(idx):
                layers.append(torch.nn.Tanh())
        return torch.nn.Sequential(*layers)

    class Sft(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder, self.head = mlp("encoder"), mlp("head")
            for k in ("obs_mean", "obs_std", "act_mean", "act_scale"):
                self.register_buffer(k, t[k].clone())

        @torch.no_grad()
        def forward(self, obs):
            x = ((obs - self.obs_mean) * (1.0 / self.obs_std)).clamp(-10.0, 10.0)
            return self.act_mean + self.act_scale * self.head(torch.tanh(self.encoder(x)))

    module = Sft()
    return lambda obs: module(torch.from_numpy(obs)).numpy()


def test_a_torch_planner_with_the_sft_weights_drives_the_native_episodes(weak_sft):
    config = {**WEAK_SFT, "eval.per_family": 10}
    planner = torch_sft(weak_sft)
    run_dir = os.path.dirname(weak_sft)
    # The Rust planner, natively: `deltaplan evaluate --policy sft` of the same checkpoint...
    native = json.loads(open(deltaplan.evaluate_policy(run_dir, "sft", "eval", config)).read())
    # ...and through the same Python evaluation loop (residual 0: the frozen planner's plan).
    rust = deltaplan.evaluate(lambda obs: np.zeros((obs.shape[0], 20), np.float32), "eval", config,
                              action_mode="residual", sft_path=weak_sft)
    torch = deltaplan.evaluate(planner, "eval", config)

    def same_end(a, b):
        return a["end_reason"] == b["end_reason"] and a["episode_steps"] == b["episode_steps"]

    # The evaluation file holds f32 values written shortest-first; the infos hold them as f64.
    as_python = [{"end_reason": e["end"], "episode_steps": e["steps"],
                  "route_completion": float(np.float32(e["route_completion"]))} for e in native]
    # The Python loop drives the Rust planner's episodes bit for bit.
    key = ("end_reason", "episode_steps", "route_completion")
    assert [{k: e[k] for k in key} for e in rust["episodes"]] == as_python
    for reference in (rust["episodes"], as_python):
        ends = [same_end(a, b) for a, b in zip(torch["episodes"], reference)]
        # Measured: 50 of 50 (and 200 of 200 on 20 per family, both splits; route completion
        # bit-equal in 36 of those 200, at most 0.0083 points apart).
        assert np.mean(ends) >= 0.9, f"only {np.mean(ends):.0%} of the episodes end alike"
        gaps = [abs(a["route_completion"] - b["route_completion"])
                for a, b in zip(torch["episodes"], reference) if same_end(a, b)]
        assert max(gaps) < 0.05, f"route completion differs by {max(gaps)} points"
    for metric in ("driving_score", "route_completion", "nuplan_score"):
        # Measured: differences of 1e-5 to 1e-4 points.
        assert torch[metric] == pytest.approx(rust[metric], abs=0.05), metric
    for metric in ("failure_rate", "collision_rate", "comfort_pass_rate"):
        assert abs(torch[metric] - rust[metric]) <= 0.1, metric
    # Open loop the two forwards agree to micrometres.
    batch = deltaplan._native.Batch(64, 1, deltaplan.settings_json(config), "residual", "next_step", weak_sft)
    obs = batch.reset(1)
    assert np.abs(batch.sft_plans() - planner(obs)).max() < 1e-4
