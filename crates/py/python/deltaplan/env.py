"""One driving world as a ``gymnasium.Env``."""

from typing import Any

import gymnasium as gym
import numpy as np

from deltaplan import _native
from deltaplan._actions import ACTION_MODES, action_space, as_actions, observation_space
from deltaplan._settings import settings_json


class DriveEnv(gym.Env):
    """One world of deltaplan's simulator.

    Observation: 142 float32 features (ego state, route, lights, the 8 nearest vehicles, the merge ahead).
    Action (``action_mode``): ``"plan"``, the H ego-frame waypoints flattened ``(x0, y0, x1,
    ...)``, or ``"residual"``, a correction in ``[-1, 1]`` per coordinate on the frozen SFT
    planner loaded from ``sft_path``: ``plan = sft(obs) + refine.max_delta * action``.
    Reward: deltaplan's CaRL-style reward. ``terminated``: collision, off-road, red light,
    blocked, non-finite plan; ``truncated``: route completed or time limit. At an episode's
    end ``info`` holds its record: every metric of deltaplan's report for this episode
    (``driving_score``, ``route_completion``, ``nuplan_score``, ...), ``end_reason``,
    ``family``, ``scenario_seed`` and ``episode_steps``.

    ``reset(seed=s)`` rebuilds the world from ``s``: the same seed gives the same episodes.
    """

    metadata = {"render_modes": ["rgb_array", "svg"], "render_fps": 10}

    def __init__(
        self,
        action_mode: str = "plan",
        sft_path: str | None = None,
        config: dict[str, Any] | None = None,
        render_mode: str | None = None,
        num_threads: int = 1,
    ):
        if action_mode not in ACTION_MODES:
            raise _native.ConfigError(f"action_mode must be one of {ACTION_MODES}, got {action_mode!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise _native.ConfigError(f"render_mode must be one of {self.metadata['render_modes']}, got {render_mode!r}")
        self._batch = _native.Batch(
            1, 0, settings_json(config), action_mode, "same_step", sft_path, num_threads
        )
        self.action_mode = action_mode
        self.render_mode = render_mode
        self.observation_space = observation_space()
        self.action_space = action_space(action_mode, self._batch.action_dim)
        self._obs: np.ndarray | None = None
        self._seeded = False

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is not None:
            obs = self._batch.reset(int(seed) & (2**64 - 1))
            self._seeded = True
        elif not self._seeded:
            obs = self._batch.reset(int(self.np_random.integers(2**63)))
            self._seeded = True
        elif self._batch.episode_steps()[0] > 0 or self._obs is None:
            obs = self._batch.next_episode()
        else:
            # The world was reset by the step that ended the last episode; nothing was played
            # since: its first observation is this episode's.
            obs = self._obs[None, :].copy()
        self._obs = obs[0]
        return obs[0], {}

    def step(self, action):
        a = as_actions(action, 1, self._batch.action_dim)
        obs, reward, terminated, truncated, final_obs, infos = self._batch.step(a)
        term, trunc = bool(terminated[0]), bool(truncated[0])
        self._obs = obs[0]
        if term or trunc:
            info = {k: _scalar(v[0]) for k, v in infos.items() if not k.startswith("_")}
            return final_obs[0], float(reward[0]), term, trunc, info
        return obs[0], float(reward[0]), term, trunc, {}

    def render(self):
        if self.render_mode == "rgb_array":
            return self._batch.render_rgb(0, 256, 80.0)
        if self.render_mode == "svg":
            return self._batch.render_svg()
        return None

    def sft_plan(self) -> np.ndarray:
        """The frozen planner's plan for the current observation (residual mode)."""
        return self._batch.sft_plans()[0]

    def expert_plan(self) -> np.ndarray:
        """The privileged expert's plan for the current state (a reference policy)."""
        return self._batch.expert_plans()[0]

    def close(self):
        self._batch.close()


def _scalar(v):
    return v.item() if isinstance(v, np.generic) else v
