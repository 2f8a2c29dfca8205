"""Train a small BEV-CNN planner in PyTorch on deltaplan's demonstrations and export it to ONNX.

A planner nobody wrote in Rust: a CNN over the bird's-eye-view raster plus the ego's own
measurements (speed, steering, route ahead: the first 28 floats of the vector observation),
the inputs of Roach- and ChauffeurNet-style planners. Everything about other vehicles, lights
and lanes reaches it through the raster only. deltaplan then refines it
(`deltaplan run --planner OUT.onnx`).

    deltaplan record --out runs/bev-demos --set 'demos.bev={height = 32, width = 32, metres_per_pixel = 1.5, behind_m = 9.0}' --set demos.steps=500
    python python/train_bev_planner.py runs/bev-demos/demos.safetensors bev_cnn.onnx

Writes OUT.onnx (inputs `bev` [batch, 9, H, W] float32 = bytes / 255 and `obs` [batch, 142];
outputs `waypoints` [batch, H, 2] and the embedding `z` [batch, 128]) and its sidecar spec
OUT.toml (the raster, the horizon, the residual's observation statistics). Deterministic for a
seed on one thread. Needs torch, numpy, safetensors, onnx and onnxscript
(`pip install -r python/requirements-bev.txt`).

The committed fixture crates/onnx/tests/fixtures/bev_cnn.onnx was made with exactly the two
commands above (seed 0); the tests and CI use the file and need no PyTorch.
"""

import argparse
import json
import math
import pathlib

import numpy as np
import torch
from safetensors import safe_open
from torch import nn

# The ego's measurements: `ego` (8) and `route` (20) of the observation layout
# (crates/sim/src/obs.rs); agents, lights and the leader come from the raster.
MEASUREMENTS = 28


class BevPlanner(nn.Module):
    """Conv(9->16, 4x4 stride 4) -> ReLU -> Conv(16->32, 3x3 stride 2) -> ReLU, with the
    normalised measurements -> Linear(128) -> tanh (the embedding z) -> Linear(2H), in the
    units of the normalised expert plans (undone inside the graph)."""

    def __init__(self, channels, height, width, horizon, stats):
        super().__init__()
        self.horizon = horizon
        self.conv = nn.Sequential(
            nn.Conv2d(channels, 16, kernel_size=4, stride=4),
            nn.ReLU(),
            nn.Conv2d(16, 32, kernel_size=3, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
        )
        features = 32 * math.ceil(height / 8) * math.ceil(width / 8)
        self.trunk = nn.Linear(features + MEASUREMENTS, 128)
        self.head = nn.Linear(128, 2 * horizon)
        for name, value in stats.items():
            self.register_buffer(name, torch.as_tensor(value, dtype=torch.float32))

    def forward(self, bev, obs):
        measurements = (obs[:, :MEASUREMENTS] - self.m_mean) / self.m_std
        z = torch.tanh(self.trunk(torch.cat([self.conv(bev), measurements], dim=1)))
        plan = self.head(z) * self.act_std + self.act_mean
        return plan.reshape(-1, self.horizon, 2), z


def load(path):
    with safe_open(path, framework="np") as f:
        meta = json.loads(f.metadata()["deltaplan"])
        data = {k: f.get_tensor(k) for k in ("obs", "actions", "bev", "episode", "family")}
    if meta.get("bev") is None:
        raise SystemExit(f"{path} has no rasters: record with --set 'demos.bev={{...}}'")
    return meta, data


def spec_toml(meta, obs_mean, obs_std):
    bev = meta["bev"]["spec"]
    floats = lambda v: "[" + ", ".join(repr(float(x)) for x in v) + "]"
    return f"""# deltaplan planner spec (crates/onnx/src/spec.rs), written by python/train_bev_planner.py
version = 1

[observation]
kind = "bev"
input = "bev"
vector_input = "obs"

[observation.bev]
height = {bev["height"]}
width = {bev["width"]}
metres_per_pixel = {float(bev["metres_per_pixel"])!r}
behind_m = {float(bev["behind_m"])!r}

[output]
waypoints = "waypoints"
horizon = {meta["horizon"]}
waypoint_dt = {float(meta["waypoint_dt"])!r}
embedding = "z"

[normalisation]
obs_mean = {floats(obs_mean)}
obs_std = {floats(obs_std)}
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("demos")
    ap.add_argument("out")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    meta, d = load(args.demos)
    obs, actions, bev = d["obs"], d["actions"], d["bev"]
    n, horizon = len(obs), meta["horizon"]
    _, c, h, w = bev.shape
    obs_mean = obs.mean(0)
    obs_std = np.maximum(obs.std(0), 1e-3)
    act_mean = actions.mean(0)
    act_std = np.maximum(actions.std(0), 1e-3)
    stats = {
        "m_mean": obs_mean[:MEASUREMENTS],
        "m_std": obs_std[:MEASUREMENTS],
        "act_mean": act_mean,
        "act_std": act_std,
    }
    model = BevPlanner(c, h, w, horizon, stats)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    # Hold out every tenth episode to report generalisation.
    held = (d["episode"].astype(np.int64) % 10) == 9
    train_idx, val_idx = np.flatnonzero(~held), np.flatnonzero(held)
    target = torch.as_tensor((actions - act_mean) / act_std, dtype=torch.float32)
    obs_t = torch.as_tensor(obs)
    rng = np.random.default_rng(args.seed)

    def batch(idx):
        raster = torch.as_tensor(bev[idx], dtype=torch.float32) / 255.0
        return raster, obs_t[idx]

    def mse(idx):
        model.eval()
        total = 0.0
        with torch.no_grad():
            for k in range(0, len(idx), 2048):
                part = idx[k : k + 2048]
                plan, _ = model(*batch(part))
                norm = (plan.reshape(len(part), -1) - model.act_mean) / model.act_std
                total += float(((norm - target[part]) ** 2).sum())
        return total / (len(idx) * 2 * horizon)

    steps = args.epochs * math.ceil(len(train_idx) / args.batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for epoch in range(args.epochs):
        model.train()
        order = rng.permutation(train_idx)
        for k in range(0, len(order), args.batch):
            idx = np.sort(order[k : k + args.batch])
            plan, _ = model(*batch(idx))
            norm = (plan.reshape(len(idx), -1) - model.act_mean) / model.act_std
            loss = ((norm - target[idx]) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        print(f"epoch {epoch + 1}/{args.epochs}: normalised MSE train {mse(train_idx):.4f}, "
              f"held-out episodes {mse(val_idx):.4f}", flush=True)

    model.eval()
    out = pathlib.Path(args.out)
    example = (torch.zeros(2, c, h, w), torch.zeros(2, obs.shape[1]))
    batch_dim = torch.export.Dim("batch", min=1)
    torch.onnx.export(
        model,
        example,
        str(out),
        input_names=["bev", "obs"],
        output_names=["waypoints", "z"],
        dynamic_shapes={"bev": {0: batch_dim}, "obs": {0: batch_dim}},
        dynamo=True,
        external_data=False,
        opset_version=18,  # within the operator sets tract is tested against (9-18)
    )
    out.with_suffix(".toml").write_text(spec_toml(meta, obs_mean, obs_std))
    print(f"wrote {out} ({out.stat().st_size} bytes) and {out.with_suffix('.toml')} "
          f"from {n} samples")


if __name__ == "__main__":
    main()
