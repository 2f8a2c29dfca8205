"""The configuration: the CLI's sections and field names, as a nested dict, a dict of dotted
keys (``{"sim.reward.comfort_penalty": 1.0}``, like ``--set``) or a mix. Unknown keys and
out-of-range values raise ``deltaplan.ConfigError`` naming the field."""

import json
from typing import Any, Mapping

from deltaplan import _native


def default_settings() -> dict:
    """Every setting with its default, nested by section."""
    return json.loads(_native.default_settings_json())


def _nest(config: Mapping[str, Any] | None) -> dict:
    nested: dict = {}
    for key, value in (config or {}).items():
        if not isinstance(key, str) or not key:
            raise _native.ConfigError(f"configuration keys are strings, got {key!r}")
        if isinstance(value, Mapping):
            value = _nest(value)
        *path, leaf = key.split(".")
        node = nested
        for part in path:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise _native.ConfigError(f"{key}: {part} is a value, not a section")
        if isinstance(value, dict) and isinstance(node.get(leaf), dict):
            node[leaf].update(value)
        else:
            node[leaf] = value
    return nested


def settings_json(config: Mapping[str, Any] | None = None) -> str:
    """The JSON the native module reads (validated there)."""
    try:
        return json.dumps(_nest(config), allow_nan=False)
    except (TypeError, ValueError) as e:
        raise _native.ConfigError(f"configuration values must be finite numbers, strings, lists or dicts: {e}") from e
