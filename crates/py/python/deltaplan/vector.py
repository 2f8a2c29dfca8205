"""N driving worlds stepped together in Rust, as a ``gymnasium.vector.VectorEnv``."""

from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from deltaplan import _native
from deltaplan._actions import ACTION_MODES, action_space, as_actions, observation_space
from deltaplan._settings import settings_json


class DriveVectorEnv(VectorEnv):
    """``num_envs`` worlds of deltaplan's simulator, stepped in parallel by Rust with the GIL
    released. Actions, observations, rewards and episode ends as ``deltaplan.DriveEnv``.

    Autoreset is gymnasium's next-step mode: the step that ends world i's episode returns its
    last observation; the next step ignores world i's action and returns the new episode's
    first observation with reward 0 and both flags false. At an episode's end ``infos`` holds
    its record: for each key (``driving_score``, ``route_completion``, ``nuplan_score``, ...,
    ``end_reason``, ``family``, ``scenario_seed``, ``episode_steps``) an array over the worlds
    and a boolean mask ``_key``. Every returned array is fresh: none is written again.
    """

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": ["rgb_array"]}

    def __init__(
        self,
        num_envs: int = 16,
        action_mode: str = "plan",
        sft_path: str | None = None,
        config: dict[str, Any] | None = None,
        num_threads: int = 0,
        render_mode: str | None = None,
    ):
        if action_mode not in ACTION_MODES:
            raise _native.ConfigError(f"action_mode must be one of {ACTION_MODES}, got {action_mode!r}")
        self._batch = _native.Batch(
            int(num_envs), 0, settings_json(config), action_mode, "next_step", sft_path, num_threads
        )
        self.num_envs = int(num_envs)
        self.action_mode = action_mode
        self.render_mode = render_mode
        self.single_observation_space = observation_space()
        self.single_action_space = action_space(action_mode, self._batch.action_dim)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._seeded = False

    def reset(self, *, seed: int | list | None = None, options: dict[str, Any] | None = None):
        if isinstance(seed, (list, tuple)):
            if len(set(s for s in seed if s is not None)) > 1 or len(seed) != self.num_envs:
                raise _native.ConfigError("one seed seeds the whole batch: pass an int")
            seed = seed[0]
        super().reset(seed=seed)
        if seed is not None:
            obs = self._batch.reset(int(seed) & (2**64 - 1))
        elif not self._seeded:
            obs = self._batch.reset(int(self.np_random.integers(2**63)))
        else:
            obs = self._batch.next_episode()
        self._seeded = True
        return obs, {}

    def step(self, actions):
        a = as_actions(actions, self.num_envs, self._batch.action_dim)
        obs, reward, terminated, truncated, _, infos = self._batch.step(a)
        if infos is None:
            return obs, reward, terminated, truncated, {}
        for key in ("end_reason", "family"):
            infos[key] = np.array(infos[key], dtype=object)
        return obs, reward, terminated, truncated, infos

    def render(self):
        if self.render_mode == "rgb_array":
            return self._batch.render_rgb(0, 256, 80.0)
        return None

    def close_extras(self, **kwargs):
        self._batch.close()
