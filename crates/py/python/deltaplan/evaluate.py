"""Closed-loop evaluation of a Python planner on the CLI's evaluation suites."""

from typing import Any, Callable

import numpy as np

from deltaplan import _native
from deltaplan._actions import as_actions
from deltaplan._settings import settings_json

METRICS = (
    "driving_score",
    "route_completion",
    "infraction_penalty",
    "collision_rate",
    "offroad_rate",
    "red_light_rate",
    "failure_rate",
    "comfort_pass_rate",
    "mean_speed",
    "nuplan_score",
)


def evaluate(
    planner: Callable[[np.ndarray], Any],
    split: str = "eval",
    config: dict[str, Any] | None = None,
    action_mode: str = "plan",
    sft_path: str | None = None,
    num_threads: int = 0,
    families: list[str] | None = None,
) -> dict[str, Any]:
    """Drives every scenario of the ``split`` suite (``eval.per_family`` per family, the
    scenarios ``deltaplan evaluate`` uses) once with ``planner``: a batch of observations
    ``[B, 142]`` in, actions ``[B, 2H]`` out (plans, or residuals in ``action_mode="residual"``),
    e.g. a PyTorch module wrapped in ``lambda obs: module(torch.from_numpy(obs)).numpy()``.

    ``families`` restricts the suite (default: every family, as the CLI).
    Returns ``{"episodes": [record per scenario, in suite order], "<metric>": mean}`` with the
    report's metrics (``driving_score``, ``nuplan_score``, ``failure_rate``, ...).
    """
    batch = _native.Batch.suite(split, settings_json(config), action_mode, sft_path, num_threads, families)
    try:
        n = batch.num_envs
        obs = batch.reset(0)
        episodes: list[dict | None] = [None] * n
        while not batch.all_idle():
            actions = as_actions(planner(obs), n, batch.action_dim)
            obs, _, _, _, _, infos = batch.step(actions)
            if infos is not None:
                keys = [k for k in infos if not k.startswith("_")]
                for i in np.flatnonzero(infos["_driving_score"]):
                    episodes[i] = {k: _scalar(infos[k][i]) for k in keys}
    finally:
        batch.close()
    summary: dict[str, Any] = {"episodes": episodes}
    for m in METRICS:
        summary[m] = float(np.mean([e[m] for e in episodes]))
    return summary


def _scalar(v):
    return v.item() if isinstance(v, np.generic) else v
