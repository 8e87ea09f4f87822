"""Framework runtimes: one module per framework behind :class:`Runtime`.

A worker gets a runtime with :func:`get_runtime` (which imports the framework
only then and turns a missing one into :class:`~berth.MissingExtraError`),
calls :meth:`Runtime.load` with the model entry of the ``LOAD`` frame, reports
:meth:`Runtime.signature`, then calls :meth:`Runtime.predict` per batch.

Signature conventions (what the engine and clients see):

============  ===================  =======================================
runtime       inputs               outputs
============  ===================  =======================================
sklearn       input FP64 [-1,n]    predict; predict_proba FP64 [-1,k]
xgboost       input FP32 [-1,n]    predict; predict_proba FP32 (classif.)
lightgbm      input FP64 [-1,n]    predict FP64 [-1] or [-1,k]
onnx          the graph's          the graph's tensor outputs
pytorch       declared, example    declared, or found by one run
              or the .pt2's        (output__0...; dict keys)
tensorflow    serving signature    serving signature / Keras outputs
              / Keras inputs
transformers  text BYTES [-1]      by task
mlflow        MLflow signature     MLflow signature (predictions)
python        class attributes     class attributes (or none: unchecked)
============  ===================  =======================================

docs/frameworks.md describes the deep-learning runtimes in full.

A signature declared in the model entry names the input the runtime reads
(for single-input frameworks) and its datatype; incoming arrays are cast to
what the framework needs.
"""

from __future__ import annotations

import abc
import importlib
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import ConfigError, InvalidInput, MissingExtraError, ModelLoadError
from ..frameworks import by_runtime
from .detect import RUNTIMES

if TYPE_CHECKING:
    import numpy as np

    from ..model import TensorSpec

__all__ = ["RUNTIMES", "Runtime", "get_runtime"]


class Runtime(abc.ABC):
    """Loads one model and runs batches on it."""

    #: Runtime name as written in the engine document (``"sklearn"``).
    name: ClassVar[str] = ""
    #: Platform string reported in model metadata (``"sklearn_sklearn"``).
    platform: str = ""
    #: The model answers a request with zero or many responses: the worker
    #: calls :meth:`predict_stream` instead of :meth:`predict`.
    decoupled: bool = False

    def __init__(self) -> None:
        self.inputs: list[TensorSpec] = []
        self.outputs: list[TensorSpec] = []
        #: The current batch's sequences (berth.sequences.Sequence, one per
        #: request) for a model with sequence_batching, else None.
        self.sequences: list[Any] | None = None

    @abc.abstractmethod
    def load(self, entry: Mapping[str, Any]) -> None:
        """Loads the model described by a model entry (``path``, ``parameters``,
        optional ``inputs``/``outputs``, ...). Raises on failure."""

    def signature(self) -> tuple[list[TensorSpec], list[TensorSpec]]:
        """The model's inputs and outputs as the runtime sees them."""
        return list(self.inputs), list(self.outputs)

    def suggested_max_batch_size(self) -> int:
        """The batch size the engine uses when the config sets none.

        64 when every input and output has a variable first dimension (the
        model takes any number of rows, so the engine may stack requests),
        else 0 (never batched)."""
        specs = list(self.inputs) + list(self.outputs)
        if specs and all(len(s.shape) > 0 and s.shape[0] == -1 for s in specs):
            return 64
        return 0

    @abc.abstractmethod
    def predict(
        self, inputs: dict[str, np.ndarray], parameters: Mapping[str, Any] | None = None
    ) -> dict[str, np.ndarray]:
        """Runs one batch. Raises :class:`~berth.InvalidInput` for bad content."""

    def predict_stream(
        self, inputs: dict[str, np.ndarray], parameters: Mapping[str, Any] | None = None
    ) -> Iterator[dict[str, np.ndarray]]:
        """A decoupled model's responses to one request (default: the one
        answer of :meth:`predict`)."""
        yield self.predict(inputs, parameters)


def get_runtime(name: str) -> Runtime:
    """A new runtime object for a runtime name.

    Raises :class:`ConfigError` for an unknown name and
    :class:`MissingExtraError` when the framework is not installed.
    """
    reg = by_runtime.get(name)
    if reg is None:
        raise ConfigError(f"unknown runtime {name!r}; expected one of {', '.join(RUNTIMES)}")
    for key, value in reg.env:
        os.environ.setdefault(key, value)
    for module in reg.imports:
        try:
            importlib.import_module(module)
        except ImportError as e:
            assert reg.extra is not None
            raise MissingExtraError(reg.display, reg.extra, f"cannot import {module}: {e}") from e
        except OSError as e:  # e.g. a missing shared library such as libgomp
            raise ModelLoadError(f"importing {module} failed: {e}") from e
    mod = importlib.import_module(f"{__name__}.{reg.module}")
    runtime: Runtime = getattr(mod, reg.cls)()
    return runtime


# ------------------------------------------------------------ shared helpers


def default_threads() -> int | None:
    """Threads a runtime should use when its entry does not say: the
    ``OMP_NUM_THREADS`` the worker set (or inherited), else ``None``."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else None


def declared(entry: Mapping[str, Any], key: str) -> list[TensorSpec]:
    """The entry's declared ``inputs`` or ``outputs`` as specs."""
    from ..model import TensorSpec

    specs = entry.get(key) or []
    if not isinstance(specs, list):
        raise ConfigError(f"{key}: expected a list of tensor specs")
    return [TensorSpec.coerce(s) for s in specs]


def int_parameter(entry: Mapping[str, Any], key: str) -> int | None:
    """An optional positive integer from the entry's ``parameters``."""
    params = entry.get("parameters") or {}
    value = params.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"parameters.{key}: expected an integer >= 1, got {value!r}")
    return value


def pick_input(inputs: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    """The input named ``name``, or the only input when there is one."""
    array = inputs.get(name)
    if array is not None:
        return array
    if len(inputs) == 1:
        return next(iter(inputs.values()))
    raise InvalidInput(f"expected one input named {name!r}, got {sorted(inputs) or 'none'}")


def to_numeric(
    array: np.ndarray, dtype: np.dtype[Any], name: str, datatype: str = ""
) -> np.ndarray:
    """``array`` as ``dtype`` (no copy when it already is). ``BF16`` inputs
    (raw bits in uint16) are widened to float32 first; ``BYTES`` is refused."""
    import numpy as np

    if array.dtype == dtype:
        return array
    if datatype == "BF16" and array.dtype == np.uint16:
        array = (array.astype(np.uint32) << 16).view(np.float32)
    if array.dtype.kind not in "biuf":
        raise InvalidInput(f"input {name!r} must hold numbers, got {array.dtype} data")
    return array.astype(dtype)


def to_str(array: np.ndarray, name: str) -> np.ndarray:
    """A BYTES input (object array of bytes) as an object array of str."""
    import numpy as np

    out = np.empty(array.shape, dtype=object)
    flat_in, flat_out = array.reshape(-1), out.reshape(-1)
    try:
        for i, value in enumerate(flat_in):
            flat_out[i] = value.decode("utf-8") if isinstance(value, bytes) else str(value)
    except UnicodeDecodeError:
        raise InvalidInput(f"input {name!r} element {i} is not UTF-8 text") from None
    return out


def leaf_names(paths: Sequence[Sequence[object]], fallbacks: Sequence[str]) -> list[str]:
    """Input names for the leaves of a model's nested input structure.

    ``paths[i]`` is the path to leaf *i* (dict keys or argument names as
    ``str``, sequence positions as ``int``); ``fallbacks[i]`` is a name the
    framework itself gives that leaf and keeps unique (a Keras ``Input``'s
    name, a ``torch.export`` placeholder). A leaf takes the last key of its
    path when that is a ``str`` (the key a caller passes in-process), else
    its fallback; when two leaves would share a name, every leaf takes its
    fallback, so that names stay unique (:class:`~berth.ModelLoadError` if
    even those repeat).
    """
    if len(paths) != len(fallbacks):
        raise ValueError(f"{len(paths)} paths but {len(fallbacks)} fallback names")
    names = [
        str(path[-1]) if path and isinstance(path[-1], str) else str(fallback)
        for path, fallback in zip(paths, fallbacks, strict=True)
    ]
    if len(set(names)) == len(names):
        return names
    names = [str(f) for f in fallbacks]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise ModelLoadError(f"the model's inputs share the names {', '.join(twice)}")
    return names
