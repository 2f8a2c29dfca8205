"""deltaplan from Python: gymnasium and Stable-Baselines3 environments over the Rust driving
simulator, with the plan itself or a residual on the frozen SFT planner as the action.

- ``deltaplan.DriveEnv``: one world, a ``gymnasium.Env`` (``gymnasium.make("deltaplan/Drive-v0")``).
- ``deltaplan.DriveVectorEnv``: N worlds stepped in Rust, a ``gymnasium.vector.VectorEnv``
  (``gymnasium.make_vec("deltaplan/Drive-v0", num_envs=N, vectorization_mode="vector_entry_point")``).
- ``deltaplan.sb3.DriveSB3VecEnv``: the same batch as a Stable-Baselines3 ``VecEnv``.
- ``deltaplan.evaluate``: closed-loop evaluation of any Python planner on the CLI's suites.
- ``deltaplan.run``, ``record``, ``train_sft``, ``refine``, ``evaluate_policy``, ``report``: the
  CLI's stages on the CLI's configuration and files (``deltaplan.stages``).
"""

import gymnasium

from deltaplan._native import ActionError, CheckpointError, ClosedError, ConfigError, OBS_DIM, StageError
from deltaplan._settings import default_settings, settings_json
from deltaplan.env import DriveEnv
from deltaplan.evaluate import evaluate
from deltaplan.stages import evaluate_policy, record, record_and_train_sft, refine, refined_planner, report, run, train_sft
from deltaplan.vector import DriveVectorEnv

__all__ = [
    "ActionError",
    "CheckpointError",
    "ClosedError",
    "ConfigError",
    "DriveEnv",
    "DriveVectorEnv",
    "OBS_DIM",
    "StageError",
    "default_settings",
    "evaluate",
    "evaluate_policy",
    "record",
    "record_and_train_sft",
    "refine",
    "refined_planner",
    "report",
    "run",
    "settings_json",
    "train_sft",
]

ENV_ID = "deltaplan/Drive-v0"

if ENV_ID not in gymnasium.registry:
    gymnasium.register(
        ENV_ID,
        entry_point="deltaplan.env:DriveEnv",
        vector_entry_point="deltaplan.vector:DriveVectorEnv",
    )
