"""Berth: serve machine-learning models fast.

A C engine (``berthd``) speaks the Open Inference Protocol and runs models in
Python worker processes. This package holds the ``berth`` command, the
custom-model API (:class:`Model`, :class:`TensorSpec`), the framework runtimes
and the worker loop.

``import berth`` does not import NumPy: :class:`Model`, :class:`ModelContext`
and :class:`TensorSpec` load on first use. That keeps the command quick and
lets a worker set thread-pool sizes before NumPy and the frameworks start.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import (
    BerthError,
    ConfigError,
    EngineNotFoundError,
    InvalidInput,
    InvalidOutput,
    MissingExtraError,
    ModelLoadError,
    ProtocolError,
)
from .pipeline import Case, Pipeline, Step, Switch

if TYPE_CHECKING:
    from .model import Model, ModelContext, TensorSpec

__version__ = "0.1.0"

__all__ = [
    "BerthError",
    "Case",
    "ConfigError",
    "EngineNotFoundError",
    "InvalidInput",
    "InvalidOutput",
    "MissingExtraError",
    "Model",
    "ModelContext",
    "ModelLoadError",
    "Pipeline",
    "ProtocolError",
    "Sequence",
    "Step",
    "Switch",
    "TensorSpec",
    "__version__",
]

_LAZY = frozenset({"Model", "ModelContext", "TensorSpec"})


def __getattr__(name: str) -> Any:
    if name == "Sequence":
        from .sequences import Sequence

        globals()[name] = Sequence
        return Sequence
    if name in _LAZY:
        from . import model

        value = getattr(model, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'berth' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _LAZY | {"Sequence"})
