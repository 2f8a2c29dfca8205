"""Spaces and action checks shared by the environments."""

import numpy as np
from gymnasium import spaces

from deltaplan import _native

# A plan's waypoints (ego frame, metres): x forward, y left. Any finite plan is executed; the
# box only tells samplers and algorithms where sensible plans lie.
PLAN_LOW = (-20.0, -20.0)
PLAN_HIGH = (80.0, 20.0)

ACTION_MODES = ("plan", "residual")


def observation_space() -> spaces.Box:
    return spaces.Box(-np.inf, np.inf, shape=(_native.OBS_DIM,), dtype=np.float32)


def action_space(action_mode: str, action_dim: int) -> spaces.Box:
    """``plan``: the waypoints; ``residual``: ``[-1, 1]`` per coordinate, scaled by
    ``refine.max_delta`` and added to the frozen planner's plan."""
    if action_mode == "residual":
        return spaces.Box(-1.0, 1.0, shape=(action_dim,), dtype=np.float32)
    low = np.tile(np.asarray(PLAN_LOW, dtype=np.float32), action_dim // 2)
    high = np.tile(np.asarray(PLAN_HIGH, dtype=np.float32), action_dim // 2)
    return spaces.Box(low, high, dtype=np.float32)


def as_actions(actions, num_envs: int, action_dim: int) -> np.ndarray:
    """A C-contiguous float32 ``[num_envs, action_dim]`` array, or ``ActionError``. Floating
    dtypes are cast; integers, booleans and objects are refused (a plan is metres)."""
    a = np.asarray(actions)
    if a.dtype.kind != "f":
        raise _native.ActionError(f"actions must be floating point, got dtype {a.dtype}")
    fits = a.shape == (num_envs, action_dim) or (num_envs == 1 and a.shape == (action_dim,))
    if not fits:
        raise _native.ActionError(
            f"actions have shape {a.shape}, expected ({num_envs}, {action_dim})"
            + (f" or ({action_dim},)" if num_envs == 1 else "")
        )
    return np.ascontiguousarray(a.reshape(num_envs, action_dim), dtype=np.float32)
