"""The engine's bounds on the document's keys, asked of berthd.

``berthd --print-limits`` renders the engine's schema tables as JSON
(docs/configuration.md); the CLI runs it once per process, and only when it
checks a value against those bounds (a batching flag or variable, a
``berth.yaml``), so that the engine is the one place that holds them.
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

from ..errors import ConfigError

__all__ = ["engine_schema", "model_bounds", "model_keys", "server_bounds"]

#: Model entry keys that come from the folders, not from a berth.yaml.
FOLDER_KEYS = frozenset({"name", "version", "path"})

_schema: dict[str, Any] | None = None


def engine_schema() -> dict[str, Any]:
    """The engine's schema (``berthd --print-limits``), read once."""
    global _schema
    if _schema is None:
        from .launch import find_berthd

        _schema = _ask(find_berthd(os.environ))
    return _schema


def _ask(berthd: str) -> dict[str, Any]:
    try:
        done = subprocess.run(
            [berthd, "--print-limits"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ConfigError(f"cannot ask {berthd} for the configuration's limits: {e}") from None
    try:
        schema = json.loads(done.stdout) if done.returncode == 0 else None
    except ValueError:
        schema = None
    if not isinstance(schema, dict) or not isinstance(schema.get("models"), dict):
        said = (done.stderr.strip().splitlines() or ["no output"])[0]
        raise ConfigError(
            f"{berthd} --print-limits did not print the configuration's limits "
            f"(exit status {done.returncode}: {said}); the engine may be older than this "
            "berth package: rebuild it (`make`), reinstall berth, or point BERTH_BERTHD at "
            "a berthd of the same version"
        )
    return schema


def _fields(section: str) -> dict[str, Any]:
    fields = engine_schema().get(section, {}).get("keys")
    if not isinstance(fields, dict):
        raise ConfigError(f"berthd --print-limits lists no keys for {section!r}")
    return fields


def _bounds(section: str, key: str) -> tuple[int, int]:
    field = _fields(section).get(key) or {}
    low, high = field.get("min"), field.get("max")
    if not isinstance(low, int) or not isinstance(high, int):
        raise ConfigError(f"berthd --print-limits gives no bounds for {section}.{key}")
    return low, high


def model_bounds(key: str) -> tuple[int, int]:
    """``(min, max)`` of a model entry's integer key, or of each element of
    ``preferred_batch_sizes``."""
    return _bounds("models", key)


def server_bounds(key: str) -> tuple[int, int]:
    """``(min, max)`` of a ``server`` integer key."""
    return _bounds("server", key)


def model_keys() -> frozenset[str]:
    """Keys a berth.yaml next to a model may hold: a model entry's keys
    less name, version and path, which come from the folders."""
    return frozenset(_fields("models")) - FOLDER_KEYS
