"""The product's stages from Python: the CLI's own functions on the CLI's configuration,
reading and writing the same files in the run directory ``out_dir`` (see the README's
subcommand table). ``config`` is a dict of the CLI's sections and fields, nested or dotted like
``--set`` (``{"refine.iterations": 20}``); ``num_threads`` is ``--threads`` (0: all cores;
results are bit-identical to the CLI's for the same configuration, seed and thread count).
Failures raise ``deltaplan.StageError`` with the CLI's message, bad settings
``deltaplan.ConfigError``."""

from os import PathLike
from typing import Any

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


def refine(out_dir: str | PathLike, config: Config = None, num_threads: int = 0) -> str:
    """``deltaplan refine``: PPO refinement of the run's frozen planner; returns the path of
    ``rl.safetensors`` (``metrics.jsonl`` beside it)."""
    return _native.refine(str(out_dir), settings_json(config), num_threads)


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
