"""The Rust batch as a Stable-Baselines3 ``VecEnv`` (needs ``pip install deltaplan[sb3]``).

SB3's contract: same-step autoreset (the returned observation of an ended world is the new
episode's first; the last one is in ``infos[i]["terminal_observation"]``),
``infos[i]["TimeLimit.truncated"]`` on truncation (PPO bootstraps on it), and
``infos[i]["episode"] = {"r": return, "l": length}`` as SB3's ``Monitor`` writes it, plus the
episode record under ``infos[i]["episode_record"]``.
"""

from typing import Any, Sequence

import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import VecEnv

from deltaplan import _native
from deltaplan._actions import ACTION_MODES, action_space, as_actions, observation_space
from deltaplan._settings import settings_json


class DriveSB3VecEnv(VecEnv):
    """``num_envs`` worlds for SB3 algorithms: ``PPO("MlpPolicy", DriveSB3VecEnv(64, ...))``."""

    def __init__(
        self,
        num_envs: int = 16,
        action_mode: str = "plan",
        sft_path: str | None = None,
        config: dict[str, Any] | None = None,
        seed: int = 0,
        num_threads: int = 0,
    ):
        if action_mode not in ACTION_MODES:
            raise _native.ConfigError(f"action_mode must be one of {ACTION_MODES}, got {action_mode!r}")
        self._batch = _native.Batch(
            int(num_envs), int(seed), settings_json(config), action_mode, "same_step", sft_path, num_threads
        )
        self.action_mode = action_mode
        self.render_mode = None
        self._seed = int(seed) & (2**64 - 1)
        super().__init__(int(num_envs), observation_space(), action_space(action_mode, self._batch.action_dim))
        self._actions: np.ndarray | None = None
        self._returns = np.zeros(self.num_envs, dtype=np.float64)
        self._lengths = np.zeros(self.num_envs, dtype=np.int64)
        self._started = False

    def reset(self):
        seed = self._seeds[0] if self._seeds else None
        if seed is not None:
            obs = self._batch.reset(int(seed) & (2**64 - 1))
        elif self._started:
            obs = self._batch.next_episode()
        else:
            obs = self._batch.reset(self._seed)
        self._started = True
        self._reset_seeds()
        self._returns[:] = 0.0
        self._lengths[:] = 0
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = as_actions(actions, self.num_envs, self._batch.action_dim)

    def step_wait(self):
        if self._actions is None:
            raise _native.ActionError("step_wait called without step_async")
        obs, reward, terminated, truncated, final_obs, infos = self._batch.step(self._actions)
        self._actions = None
        dones = terminated | truncated
        self._returns += reward
        self._lengths += 1
        out: list[dict] = [{} for _ in range(self.num_envs)]
        if infos is not None:
            keys = [k for k in infos if not k.startswith("_")]
            for i in np.flatnonzero(dones):
                record = {k: _scalar(infos[k][i]) for k in keys}
                out[i] = {
                    "terminal_observation": final_obs[i],
                    "TimeLimit.truncated": bool(truncated[i] and not terminated[i]),
                    "episode": {"r": float(self._returns[i]), "l": int(self._lengths[i])},
                    "episode_record": record,
                }
                self._returns[i] = 0.0
                self._lengths[i] = 0
        return obs, reward, dones, out

    def close(self) -> None:
        self._batch.close()

    def get_attr(self, attr_name: str, indices=None) -> list[Any]:
        return [getattr(self, attr_name) for _ in self._indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices=None) -> None:
        setattr(self, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices=None, **method_kwargs) -> list[Any]:
        method = getattr(self, method_name)
        return [method(*method_args, **method_kwargs) for _ in self._indices(indices)]

    def env_is_wrapped(self, wrapper_class, indices=None) -> list[bool]:
        return [False for _ in self._indices(indices)]

    def _indices(self, indices) -> Sequence[int]:
        if indices is None:
            return range(self.num_envs)
        if isinstance(indices, int):
            return [indices]
        return indices


def _scalar(v):
    return v.item() if isinstance(v, np.generic) else v
