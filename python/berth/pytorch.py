"""Eager PyTorch models: subclass :class:`TorchModel`.

.. code-block:: python

    import torch
    import berth
    from berth.pytorch import TorchModel

    class Net(TorchModel):
        inputs = [berth.TensorSpec("x", "FP32", [-1, 4])]
        outputs = [berth.TensorSpec("y", "FP32", [-1, 3])]

        def build(self):
            net = MyNet()
            net.load_state_dict(torch.load(self.context.path / "weights.pth"))
            return net

``load()`` calls :meth:`~TorchModel.build` once, moves the module to this
instance's device (``parameters.device``, by default GPU ``instance % GPUs``
when CUDA is available, else the CPU), puts it in eval mode and sizes
PyTorch's thread pool (``parameters.threads``). ``predict()`` turns the
declared inputs into tensors on that device, calls the module in
``torch.inference_mode()`` and returns NumPy arrays. ``preprocess()`` and
``postprocess()`` work on NumPy arrays around it, as for any
:class:`berth.Model`.

Without declared ``outputs`` but with ``example_input`` (here or in
``parameters.example_input``: ``{shape, datatype[, name]}`` or a list), the
model runs once at load to find its outputs; inputs come from the example
too when they are not declared.

:func:`load_torchscript` loads a TorchScript file for :meth:`~TorchModel.build`.

Importing this module without PyTorch raises
:class:`~berth.MissingExtraError` naming the ``torch`` extra.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from .errors import InvalidInput, MissingExtraError
from .frameworks import framework
from .model import Model, TensorSpec

try:
    import torch
except ImportError as e:  # pragma: no cover - exercised by the missing-extra tests
    _fw = framework("pytorch")
    raise MissingExtraError(_fw.display, _fw.extra or "", f"cannot import torch: {e}") from e

from .runtimes import _torch
from .runtimes.pytorch import example_specs, example_tensors, load_torchscript

__all__ = ["TorchModel", "load_torchscript"]


class TorchModel(Model):
    """A :class:`berth.Model` whose :meth:`build` returns a ``torch.nn.Module``
    (or any callable taking and returning tensors)."""

    platform: ClassVar[str] = "pytorch_eager"
    #: An example of predict()'s inputs used to find the signature at load
    #: (``{shape, datatype[, name]}`` or a list of them).
    example_input: ClassVar[Any] = None

    module: Any
    device: torch.device

    def build(self) -> Any:
        """Returns the module to serve, weights loaded. Subclasses override it."""
        raise NotImplementedError(f"{type(self).__name__} must define build(self)")

    def load(self) -> None:
        ctx = self.context
        entry = {"parameters": ctx.parameters, "instance": ctx.instance}
        _torch.set_threads(entry)
        self.device = _torch.choose_device(entry)
        module = self.build()
        if isinstance(module, torch.nn.Module):
            module = module.to(self.device).eval()
        self.module = module
        self._derive_signature()

    def _derive_signature(self) -> None:
        example = self.example_input or self.context.parameters.get("example_input")
        if example is None or (self.inputs is not None and self.outputs is not None):
            return
        specs = example_specs(example)
        if self.inputs is None:
            self.inputs = [  # type: ignore[misc]  # set on the instance
                TensorSpec(s["name"] or f"input__{i}", s["datatype"], [-1, *s["shape"][1:]])
                for i, s in enumerate(specs)
            ]
        if self.outputs is None:
            names = [s.name for s in self.inputs or []]
            arrays = {
                n: t.cpu().numpy()
                for n, t in zip(names, example_tensors(specs, torch.device("cpu")), strict=False)
            }
            result = self.predict(arrays)
            self.outputs = [  # type: ignore[misc]
                TensorSpec(
                    name,
                    _dtype_name(value),
                    [-1, *value.shape[1:]] if value.ndim else [],
                )
                for name, value in result.items()
            ]

    def tensors(self, inputs: Mapping[str, np.ndarray]) -> list[torch.Tensor]:
        """predict()'s inputs as tensors on :attr:`device`: in the order and
        datatypes of the declared ``inputs``; as given (their own dtypes, in
        order) when none are declared or ``preprocess()`` made them."""
        specs: Sequence[TensorSpec] | None = self.inputs
        if not specs or type(self).preprocess is not Model.preprocess:
            specs = [TensorSpec(n, _dtype_name(a), [-1] * a.ndim) for n, a in inputs.items()]
        elif len(specs) == 1 and len(inputs) == 1:
            return [_torch.to_torch(next(iter(inputs.values())), specs[0], self.device)]
        missing = [s.name for s in specs if s.name not in inputs]
        if missing:
            raise InvalidInput(
                f"missing input {missing[0]!r}; the model takes {[s.name for s in specs]}"
            )
        return [_torch.to_torch(inputs[s.name], s, self.device) for s in specs]

    def forward(self, *tensors: torch.Tensor) -> Any:
        """Calls the module; override to pass arguments differently."""
        return self.module(*tensors)

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        args = self.tensors(inputs)
        with torch.inference_mode():
            result = self.forward(*args)
        declared = self.outputs if type(self).postprocess is Model.postprocess else None
        named = _torch.name_outputs(result, declared or ())
        return {name: _torch.from_torch(value, name) for name, value in named.items()}


def _dtype_name(array: np.ndarray) -> str:
    from .tensors import dtype_to_datatype

    return dtype_to_datatype(array.dtype)
