"""The custom-model API: subclass :class:`Model`.

.. code-block:: python

    import numpy as np
    import berth

    class Doubler(berth.Model):
        inputs = [berth.TensorSpec("x", "FP32", [-1, 3])]
        outputs = [berth.TensorSpec("y", "FP32", [-1, 3])]

        def load(self) -> None:          # once per worker process
            self.factor = float(self.context.parameters.get("factor", 2))

        def predict(self, inputs):       # one batch
            x = inputs["x"]
            if not np.isfinite(x).all():
                raise berth.InvalidInput("x must be finite")  # client gets 400
            return {"y": x * self.factor}

Serve it with ``berth serve doubler.py`` (or ``doubler.py:Doubler``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .errors import ConfigError
from .tensors import DATATYPES, MAX_DIMS

__all__ = ["Model", "ModelContext", "TensorSpec"]

_NAME = re.compile(r"^[^\x00-\x1f]{1,256}$")


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a model: name, datatype and shape.

    ``datatype`` is a protocol name: BOOL, UINT8, UINT16, UINT32, UINT64,
    INT8, INT16, INT32, INT64, FP16, FP32, FP64, BYTES or BF16 (case does not
    matter). ``-1`` in ``shape`` marks a variable dimension (usually the
    batch).
    """

    name: str
    datatype: str
    shape: Sequence[int]
    #: An input a request may leave out (Triton's ``optional: true``).
    optional: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ConfigError(f"tensor name {self.name!r}: expected 1..256 printable characters")
        datatype = self.datatype.upper() if isinstance(self.datatype, str) else self.datatype
        if datatype not in DATATYPES:
            raise ConfigError(
                f"tensor {self.name!r}: unknown datatype {self.datatype!r}; "
                f"expected one of {', '.join(DATATYPES)}"
            )
        try:
            shape = tuple(int(d) for d in self.shape)
            if any(isinstance(d, bool) or int(d) != d for d in self.shape):
                raise ValueError
        except (TypeError, ValueError):
            raise ConfigError(
                f"tensor {self.name!r}: shape must be a list of integers, got {self.shape!r}"
            ) from None
        if len(shape) > MAX_DIMS or any(d < -1 for d in shape):
            raise ConfigError(
                f"tensor {self.name!r}: shape {list(shape)} must have at most {MAX_DIMS} "
                "dimensions, each >= 0 or -1 (variable)"
            )
        object.__setattr__(self, "datatype", datatype)
        object.__setattr__(self, "shape", shape)

    def to_dict(self) -> dict[str, Any]:
        """The spec as the JSON object the protocols use."""
        doc: dict[str, Any] = {
            "name": self.name,
            "datatype": self.datatype,
            "shape": list(self.shape),
        }
        if self.optional:
            doc["optional"] = True
        return doc

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TensorSpec:
        """Builds a spec from ``{"name", "datatype", "shape"}``."""
        try:
            return cls(
                data["name"],
                data["datatype"],
                data.get("shape", [-1]),
                optional=data.get("optional") is True,
            )
        except (KeyError, TypeError, AttributeError):
            raise ConfigError(
                f"tensor spec {data!r}: expected a mapping with name, datatype and shape"
            ) from None

    @classmethod
    def coerce(cls, value: TensorSpec | Mapping[str, Any]) -> TensorSpec:
        """A spec from a spec or a mapping."""
        return value if isinstance(value, TensorSpec) else cls.from_dict(value)


@dataclass
class ModelContext:
    """What a model knows about itself, set as ``model.context`` before ``load()``."""

    name: str
    version: str = "1"
    #: The model's file or folder (the folder holding the model's .py file
    #: for custom models, where their artefacts usually live).
    path: Path = field(default_factory=Path)
    #: The model entry's free-form ``parameters``.
    parameters: dict[str, Any] = field(default_factory=dict)
    #: 0-based index of this worker process among the model's instances.
    instance: int = 0
    #: The entry's ``max_batch_size`` (0: no batch dimension).
    max_batch_size: int = 0


class Model:
    """Base class of custom models.

    Berth creates the object with no arguments, sets :attr:`context`, calls
    :meth:`load` once per worker process, then for every batch calls
    ``postprocess(predict(preprocess(inputs)))``. Inputs map names to NumPy
    arrays (``BYTES`` tensors are object arrays of ``bytes``); return a dict
    of NumPy arrays. Raise :class:`berth.InvalidInput` for bad request
    content: the client gets 400 with your message; any other exception
    gives 500.

    Declare ``inputs``/``outputs`` (lists of :class:`TensorSpec`) to have the
    engine check requests and report the signature; without them any input
    is accepted. ``load()`` may also set them on the instance (from the
    artefacts it loaded). If ``preprocess``, ``predict`` or ``postprocess``
    takes an argument named ``parameters``, it receives the request's
    parameters dict. A model served with ``sequence_batching`` whose
    ``predict`` takes ``sequences`` receives one :class:`berth.Sequence`
    per request of the batch, each with a per-sequence ``state`` dict
    (docs/sequences.md).

    Pre- and post-processing: the declared ``inputs``/``outputs`` are what
    clients send and receive; ``preprocess`` turns them into what
    ``predict`` runs on (``BYTES`` holding images, JSON or text become
    arrays: see :mod:`berth.decode`) and ``postprocess`` turns the raw
    results into the declared outputs (labels, scores). Both run in the
    worker, on the whole batch.
    """

    inputs: ClassVar[Sequence[TensorSpec] | None] = None
    outputs: ClassVar[Sequence[TensorSpec] | None] = None
    platform: ClassVar[str] = "berth_python"
    #: Rows the engine may stack into one batch when berth.yaml sets no
    #: ``max_batch_size``; 0 (the default) means requests are never
    #: combined. Set it when ``predict`` handles any number of rows.
    max_batch_size: ClassVar[int] = 0
    #: Decoupled: ``predict`` answers one request with zero or many
    #: responses. A ``predict`` written as a generator (``yield`` a dict of
    #: outputs per response) is decoupled without saying so; set it to
    #: ``True`` for a ``predict`` that returns an iterator some other way.
    #: Decoupled models run one request per call (never batched) and are
    #: served by gRPC ``ModelStreamInfer`` and REST ``generate_stream``
    #: (docs/decoupled.md); ``postprocess`` runs on each response.
    decoupled: ClassVar[bool] = False

    context: ModelContext

    def load(self) -> None:
        """Loads weights and other state; called once before any batch."""

    def preprocess(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Runs before :meth:`predict` on each batch (default: identity):
        request inputs in, :meth:`predict`'s inputs out. Raise
        :class:`berth.InvalidInput` for content it cannot decode."""
        return inputs

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Runs the model on one batch. Subclasses must override it."""
        raise NotImplementedError(f"{type(self).__name__} must define predict(self, inputs)")

    def postprocess(self, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Runs after :meth:`predict` on each batch (default: identity):
        :meth:`predict`'s results in, the declared outputs out."""
        return outputs
