"""The product's stages from Python: the CLI's own functions on the CLI's configuration,
reading and writing the same files in the run directory ``out_dir`` (see the README's
subcommand table). ``config`` is a dict of the CLI's sections and fields, nested or dotted like
``--set`` (``{"refine.iterations": 20}``); ``num_threads`` is ``--threads`` (0: all cores;
results are bit-identical to the CLI's for the same configuration, seed and thread count).
Failures raise ``deltaplan.StageError`` with the CLI's message, bad settings
``deltaplan.ConfigError``."""

from os import PathLike
from pathlib import Path
from typing import Any, Callable

import numpy as np

from deltaplan import _native
from deltaplan._settings import settings_json

Config = dict[str, Any] | None


def run(out_dir: str | PathLike, config: Config = None, num_threads: int = 0) -> str:
    """``deltaplan run``: record, train-sft, refine, evaluate, report (resuming what a previous
    run of the same configuration left). Returns the path of ``report.md`` (``report.json``
    beside it)."""
    return _native.run(str(out_dir), settings_json(config), num_threads)


def record(out_dir: str | PathLike, config: Config = None, num_threads: int = 0) -> None:
    """``deltaplan record``: expert demonstrations into ``demos.safetensors``."""
    _native.record(str(out_dir), settings_json(config), num_threads)


def train_sft(out_dir: str | PathLike, config: Config = None, num_threads: int = 0) -> str:
    """``deltaplan train-sft``: behaviour cloning; returns the path of ``sft.safetensors``."""
    return _native.train_sft(str(out_dir), settings_json(config), num_threads)


def refine(out_dir: str | PathLike, config: Config = None, num_threads: int = 0,
           planner: Callable[[np.ndarray], Any] | None = None, planner_id: str | None = None) -> str:
    """``deltaplan refine``: PPO refinement of the run's frozen planner; returns the path of
    ``rl.safetensors`` (``metrics.jsonl`` beside it).

    With ``planner`` (a batch of observations ``[B, 142]`` float32 in, plans ``[B, 2H]`` out,
    e.g. a PyTorch module wrapped in a function), that planner is refined in place of the run's
    SFT checkpoint: no recording or behaviour cloning is needed. It is called once per rollout
    step with every world's observation (and for bootstrap values), with the GIL taken for the
    call only. ``planner_id`` identifies it in the checkpoint (e.g. a hash of its weights; a
    resume or :func:`refined_planner` with another id is refused); default: its qualified name.
    """
    if planner is None:
        return _native.refine(str(out_dir), settings_json(config), num_threads)
    return _native.refine_python(str(out_dir), settings_json(config), _plans_of(planner),
                                 _planner_id(planner, planner_id), num_threads)


def refined_planner(out_dir: str | PathLike, planner: Callable[[np.ndarray], Any], planner_id: str | None = None,
                    config: Config = None):
    """The refined planner of :func:`refine` with a Python ``planner``: a callable, observations
    ``[B, 142]`` in, ``planner(obs) + ramp * delta(obs)`` out (the residual's mean), e.g. for
    :func:`deltaplan.evaluate`. Its ``iteration`` is the checkpoint's."""
    return _native.RefinedPythonPlanner(str(Path(out_dir) / "rl.safetensors"), settings_json(config),
                                        _plans_of(planner), _planner_id(planner, planner_id))


def _planner_id(planner, planner_id: str | None) -> str:
    if planner_id is not None:
        return str(planner_id)
    name = getattr(planner, "__qualname__", type(planner).__qualname__)
    return f"python:{getattr(planner, '__module__', type(planner).__module__)}.{name}"


def _plans_of(planner):
    """``planner`` returning C-contiguous float32 plans (shapes are checked in Rust)."""
    def plans(obs):
        a = np.asarray(planner(obs))
        if a.dtype.kind != "f":
            raise _native.ActionError(f"the planner must return floating point plans, got dtype {a.dtype}")
        return np.ascontiguousarray(a, dtype=np.float32)
    return plans


def evaluate_policy(out_dir: str | PathLike, policy: str, split: str = "eval", config: Config = None,
                    num_threads: int = 0) -> str:
    """``deltaplan evaluate --policy {expert,sft,rl} --split {eval,hard}``; returns the path of
    the evaluation file (``eval/<split>_<policy>.json``, a record per scenario)."""
    return _native.evaluate_policy(str(out_dir), settings_json(config), policy, split, num_threads)


def report(out_dir: str | PathLike, config: Config = None, num_threads: int = 0) -> str:
    """``deltaplan report``: ``report.md``, ``report.json`` and ``figures/`` (evaluating what is
    missing); returns the path of ``report.md``."""
    return _native.report(str(out_dir), settings_json(config), num_threads)


def record_and_train_sft(out_dir: str | PathLike, config: Config = None) -> tuple[str, float]:
    """``deltaplan record`` then ``deltaplan train-sft`` into ``out_dir``. Returns the path of
    ``sft.safetensors`` (what ``action_mode="residual"`` loads) and the best validation ADE in
    metres."""
    return _native.record_and_train_sft(str(out_dir), settings_json(config))
