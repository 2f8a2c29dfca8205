"""Pipeline stages from Python, with the CLI's settings and files."""

from typing import Any

from deltaplan import _native
from deltaplan._settings import settings_json


def record_and_train_sft(out_dir: str, config: dict[str, Any] | None = None) -> tuple[str, float]:
    """``deltaplan record`` then ``deltaplan train-sft`` into ``out_dir`` with the sections
    ``seed``, ``sim``, ``train_scenarios``, ``demos`` and ``sft`` of ``config``. Returns the
    path of ``sft.safetensors`` (what ``action_mode="residual"`` loads) and the best
    validation ADE in metres."""
    return _native.record_and_train_sft(str(out_dir), settings_json(config))
